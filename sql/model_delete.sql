-- Remove stored models' rows (`pairwise models --remove/--keep`, tasks/model_retention.py): their folders go
-- after this commits.
DELETE FROM models WHERE list_contains($model_ids, model_id)
