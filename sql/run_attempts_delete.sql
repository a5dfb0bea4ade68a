-- Remove a run's attempts (`pairwise runs --keep`, tasks/run_retention.py).
DELETE FROM run_attempts WHERE run_id = $run_id
