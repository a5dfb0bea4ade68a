-- Register a run as running; re-running a run id resets its row (its old rows stay until the commit replaces them).
INSERT OR REPLACE INTO runs (run_id, status, started_at, params)
VALUES ($run_id, 'running', now(), $params)
