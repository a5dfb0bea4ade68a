-- The latest succeeded run (what `pairwise report --html` shows by default).
SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
