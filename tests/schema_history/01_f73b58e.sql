-- The schema as the code of commit f73b58e of 2026-11-22 left a fresh file: the first pipeline.
-- Written by tests/schema_history/generate.py from git; never edit: it is history.

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
);

-- One row per run x item x modality. gold_class is the run's gold column (NULL without one).
CREATE TABLE IF NOT EXISTS item_labels (
    run_id          VARCHAR NOT NULL,
    item_id         VARCHAR NOT NULL,
    modality        VARCHAR NOT NULL,
    base_class      VARCHAR NOT NULL,
    base_score      REAL NOT NULL,
    base_margin     REAL,
    pairwise_class  VARCHAR NOT NULL,
    pairwise_margin REAL,
    gold_class      VARCHAR
);

-- One row per run x modality x class pair (class_a < class_b in class order): the pair's kept dimensions.
CREATE TABLE IF NOT EXISTS pair_masks (
    run_id   VARCHAR NOT NULL,
    modality VARCHAR NOT NULL,
    class_a  VARCHAR NOT NULL,
    class_b  VARCHAR NOT NULL,
    n_dims   INTEGER NOT NULL,
    dims     INTEGER[] NOT NULL,
    n_a      BIGINT NOT NULL,     -- confident items of class_a against class_b
    n_b      BIGINT NOT NULL,     -- confident items of class_b against class_a
    fallback BOOLEAN NOT NULL     -- too few confident items: all dimensions kept
);

-- One row per run x method x metric x modality pair. modality_b = 'gold' for gold metrics.
CREATE TABLE IF NOT EXISTS agreement_metrics (
    run_id     VARCHAR NOT NULL,
    method     VARCHAR NOT NULL CHECK (method IN ('base', 'pairwise')),
    metric     VARCHAR NOT NULL,
    modality_a VARCHAR NOT NULL,
    modality_b VARCHAR NOT NULL,
    value      DOUBLE
);

-- One row per run x rejected item (x modality, when the rejection is for one modality only).
CREATE TABLE IF NOT EXISTS rejected_items (
    run_id   VARCHAR NOT NULL,
    item_id  VARCHAR,
    modality VARCHAR,
    reason   VARCHAR NOT NULL
);

-- The labels of the latest succeeded run, and nothing else: readers never see half a run.
CREATE OR REPLACE VIEW current_labels AS
SELECT l.*
FROM item_labels AS l
WHERE l.run_id = (
    SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
);
