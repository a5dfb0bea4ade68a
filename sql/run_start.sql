-- Register a run id as running, unless it has succeeded before: that row stays as it is, and readers keep
-- seeing that success, until the commit of this attempt replaces it (run_succeed.sql). An id that failed
-- before is reset.
INSERT INTO runs (run_id, status, started_at, params)
VALUES ($run_id, 'running', now(), $params)
ON CONFLICT (run_id) DO UPDATE
SET status = 'running', started_at = excluded.started_at, finished_at = NULL, params = excluded.params,
    n_items = NULL, n_classes = NULL, modalities = NULL, details = NULL, error = NULL
WHERE runs.status <> 'succeeded'
