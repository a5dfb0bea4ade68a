-- The latest run of any status (what `pairwise report` shows by default).
SELECT run_id FROM runs ORDER BY started_at DESC, run_id DESC LIMIT 1
