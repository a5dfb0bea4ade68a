-- Only an attempt still running fails: one that committed stands (a signal after its COMMIT, before the flow
-- left, took the flow's failure path and recorded a committed attempt failed).
UPDATE run_attempts SET status = 'failed', finished_at = now(), error = $error
WHERE run_id = $run_id AND attempt = $attempt AND status = 'running'
