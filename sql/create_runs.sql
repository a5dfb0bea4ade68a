-- One row per run. A run is 'running' while it writes, 'succeeded' only once every table is complete
-- (set in the same transaction that loads its rows), 'failed' otherwise, with the reason in error.
CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    status      VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    params      JSON NOT NULL,       -- every parameter of the run, the seed included
    n_items     BIGINT,
    n_classes   INTEGER,
    modalities  VARCHAR[],
    details     JSON,                -- tourney bracket per modality, partitions, timings
    error       VARCHAR              -- why a failed run failed
)
