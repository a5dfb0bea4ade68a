-- A failed attempt marks its run failed only if the run is running: a run id that succeeded before keeps
-- that success (the failure is in run_attempts).
UPDATE runs SET status = 'failed', finished_at = now(), error = $error
WHERE run_id = $run_id AND status = 'running'
