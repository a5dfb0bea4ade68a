-- Schema version 1: the tables as the code before schema versions wrote them (files of that code hold them
-- already, without a version record; the oldest lack item_labels.given_gap and given_h2h).
-- Migrations run in order on every write connection (tasks/store.py), each in its own transaction with the
-- row that records it in schema_migrations. A migration is never edited once released: change the schema
-- with a new file NNN_name.sql. The views are not here: every write connection re-creates them from
-- sql/create_*_labels.sql.

-- One row per migration applied to this file: its version (the NNN of its file), name and when.
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL
);

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

-- One row per run x item x modality. gold_class is the run's gold column (NULL without one);
-- given_gap and given_h2h are the evidence against it (see annotation_issues below).
CREATE TABLE IF NOT EXISTS item_labels (
    run_id          VARCHAR NOT NULL,
    item_id         VARCHAR NOT NULL,
    modality        VARCHAR NOT NULL,
    base_class      VARCHAR NOT NULL,
    base_score      REAL NOT NULL,
    base_margin     REAL,
    pairwise_class  VARCHAR NOT NULL,
    pairwise_margin REAL,
    gold_class      VARCHAR,
    given_gap       REAL,
    given_h2h       REAL
);
-- Files written before the review columns existed get them (NULL for their runs).
ALTER TABLE item_labels ADD COLUMN IF NOT EXISTS given_gap REAL;
ALTER TABLE item_labels ADD COLUMN IF NOT EXISTS given_h2h REAL;

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

-- Items whose given (gold) label the run's evidence speaks against, most likely mislabelled first.
-- Only runs with a gold column write rows, and only for items with some evidence (raw_score > 0).
-- raw_score: mean over the item's labelled modalities of [pairwise label <> given] + given_gap
-- (pairwise_core/review.py): first how many modalities' pairwise labels disagree, then how far the
-- given label trails in base cosine.
-- score (the rank order): raw_score standardized among the items given the same label, (raw - mean) / sd.
-- A class the prompts describe badly draws disagreement on most of its items, clean ones included;
-- measured against its own items, an item stands out only if its class's usual disagreement does not
-- explain it (bench/evaluate_review.py; cleanlab's per-class thresholds answer the same problem).
-- suggested_label: the pairwise label other than the given one that most modalities give (then the larger
-- margin); when every pairwise label is the given one, the base label that beats it by the widest gap.
-- agreeing_modalities: how many modalities' pairwise labels are the suggested one.
-- evidence, one struct per labelled modality:
--   given_gap  base cosine of the best class minus that of the given label (0 when the base label is the given one);
--   given_h2h  the pairwise label's normalized margin over the given label in their own match, (x . w) / |x * m|
--              on that pair's mask (0 when they are the same; negative when the given label wins that match).
CREATE TABLE IF NOT EXISTS annotation_issues (
    run_id              VARCHAR NOT NULL,
    rank                INTEGER NOT NULL,
    item_id             VARCHAR NOT NULL,
    given_label         VARCHAR NOT NULL,
    suggested_label     VARCHAR NOT NULL,
    score               DOUBLE NOT NULL,
    raw_score           DOUBLE NOT NULL,
    agreeing_modalities INTEGER NOT NULL,
    evidence            STRUCT(
                            modality VARCHAR, base_label VARCHAR, base_margin REAL,
                            pairwise_label VARCHAR, pairwise_margin REAL, given_gap REAL, given_h2h REAL
                        )[] NOT NULL
);

-- One row per run x method x modality pair x (pred, ref) cell: how many items modality_a labelled pred
-- where modality_b (or 'gold') says ref. The counts behind agreement_metrics, kept for reports.
CREATE TABLE IF NOT EXISTS confusion_counts (
    run_id     VARCHAR NOT NULL,
    method     VARCHAR NOT NULL,
    modality_a VARCHAR NOT NULL,
    modality_b VARCHAR NOT NULL,
    pred       VARCHAR NOT NULL,
    ref        VARCHAR NOT NULL,
    n          BIGINT NOT NULL
);
