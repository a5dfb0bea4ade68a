-- Remove a run's row (`pairwise runs --keep`, tasks/run_retention.py), after its other tables' rows.
DELETE FROM runs WHERE run_id = $run_id
