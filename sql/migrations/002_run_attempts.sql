-- Schema version 2: every attempt of a run id is recorded in run_attempts, and `runs` keeps what readers see.
-- From this version a run id that has succeeded stays succeeded in `runs` (status, started_at, finished_at,
-- params, n_items...) while it is re-run, and after a re-run that fails or is killed: only the commit of a
-- successful attempt replaces its row and its output rows, in one transaction. For an id that never
-- succeeded, `runs` follows its latest attempt ('running', then 'failed' with the reason), as before.

-- One row per attempt to run a run id (1, 2, ... per id): the process that owns it (host, pid; a running
-- attempt whose process is gone is marked failed by the next run on its host), its parameters, its outcome.
CREATE TABLE run_attempts (
    run_id      VARCHAR NOT NULL,
    attempt     INTEGER NOT NULL,
    status      VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    params      JSON NOT NULL,       -- the attempt's parameters: `runs` takes them when it succeeds
    host        VARCHAR,
    pid         INTEGER,
    error       VARCHAR,             -- why a failed attempt failed
    PRIMARY KEY (run_id, attempt)
);

-- Each run of an older file becomes its attempt 1; a run still running keeps its owner (runs.details.owner),
-- so that it is marked failed if its process is gone.
INSERT INTO run_attempts
SELECT run_id, 1, status, started_at, finished_at, params,
       details->>'$.owner.host', CAST(details->>'$.owner.pid' AS INTEGER), error
FROM runs;
