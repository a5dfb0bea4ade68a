-- Record a new attempt of a run id, owned by this process: attempts of an id are numbered 1, 2, ...
INSERT INTO run_attempts (run_id, attempt, status, started_at, params, host, pid)
SELECT $run_id, coalesce(max(attempt), 0) + 1, 'running', now(), $params, $host, $pid
FROM run_attempts WHERE run_id = $run_id
RETURNING attempt
