-- The runs that recorded a model id (runs.model_id), oldest first: a model no longer stored is named by them.
SELECT run_id FROM runs WHERE model_id = $model_id ORDER BY started_at, run_id
