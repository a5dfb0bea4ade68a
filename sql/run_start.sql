-- Register a run as running, with the process that owns it; re-running a run id resets its row
-- (its old rows stay until the commit replaces them).
INSERT OR REPLACE INTO runs (run_id, status, started_at, params, details)
VALUES ($run_id, 'running', now(), $params, $details)
