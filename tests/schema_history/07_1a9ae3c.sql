-- The schema as the code of commit 1a9ae3c of 2026-11-29 left a fresh file: schema version 3: refined and joint labels.
-- Written by tests/schema_history/generate.py from git; never edit: it is history.

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

INSERT INTO schema_migrations VALUES (1, 'baseline', '2026-12-01 00:00:00+00');

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

INSERT INTO schema_migrations VALUES (2, 'run_attempts', '2026-12-01 00:00:00+00');

-- Schema version 3: the refinement (METHOD.md step 8) and one joint label per item.

-- Per item and modality, the refined label and its posterior probability in that modality (NULL for runs
-- made before the refinement).
ALTER TABLE item_labels ADD COLUMN refined_class VARCHAR;
ALTER TABLE item_labels ADD COLUMN refined_confidence REAL;

-- agreement_metrics.method may now be 'refined'; the joint label is reported as modality_a = 'joint'.
-- DuckDB cannot change a CHECK constraint in place: the table is rebuilt with its rows.
CREATE TABLE agreement_metrics_v3 (
    run_id     VARCHAR NOT NULL,
    method     VARCHAR NOT NULL CHECK (method IN ('base', 'pairwise', 'refined')),
    metric     VARCHAR NOT NULL,
    modality_a VARCHAR NOT NULL,
    modality_b VARCHAR NOT NULL,
    value      DOUBLE
);
INSERT INTO agreement_metrics_v3 SELECT * FROM agreement_metrics;
DROP TABLE agreement_metrics;
ALTER TABLE agreement_metrics_v3 RENAME TO agreement_metrics;

-- One row per run x item: the label of all the item's modalities together (the consensus_labels view shows
-- the succeeded runs' rows). See sql/create_consensus_labels.sql for the columns.
CREATE TABLE joint_labels (
    run_id              VARCHAR NOT NULL,
    item_id             VARCHAR NOT NULL,
    label               VARCHAR,
    confidence          REAL,
    status              VARCHAR NOT NULL,
    agreeing_modalities INTEGER NOT NULL,
    n_modalities        INTEGER NOT NULL,
    gold_class          VARCHAR
);

-- Runs made before the joint label keep the one label per item they had: votes of the modalities'
-- pairwise labels, ties broken by the larger pairwise margin. Their statuses are the old ones (agreed,
-- single_modality, majority, by_margin, undecided) and their confidence is NULL: the margins they had are
-- not probabilities.
INSERT INTO joint_labels
WITH votes AS (
    SELECT run_id, item_id, pairwise_class AS label, count(*) AS votes, max(pairwise_margin) AS top_margin,
           any_value(gold_class) AS gold_class
    FROM item_labels
    GROUP BY run_id, item_id, pairwise_class
),
ranked AS (
    SELECT *,
           row_number() OVER by_strength AS place,
           count(*) OVER item AS n_labels,
           sum(votes) OVER item AS n_modalities,
           lead(votes) OVER by_strength AS next_votes,
           lead(top_margin) OVER by_strength AS next_margin
    FROM votes
    WINDOW item AS (PARTITION BY run_id, item_id),
           by_strength AS (PARTITION BY run_id, item_id ORDER BY votes DESC, top_margin DESC NULLS LAST, label)
),
decided AS (
    SELECT *,
           CASE
               WHEN n_labels = 1 AND n_modalities > 1 THEN 'agreed'
               WHEN n_labels = 1 THEN 'single_modality'
               WHEN votes > next_votes THEN 'majority'
               WHEN top_margin > next_margin THEN 'by_margin'
               ELSE 'undecided'
           END AS status
    FROM ranked
    WHERE place = 1
)
SELECT run_id, item_id, CASE WHEN status = 'undecided' THEN NULL ELSE label END, NULL, status,
       CAST(votes AS INTEGER), CAST(n_modalities AS INTEGER), gold_class
FROM decided;

-- One row per run x modality (or 'joint') x confidence bin (10 equal-width bins, 0 = [0, 0.1)): the refined
-- confidence against gold, for runs with a gold column. The sums behind agreement_metrics.gold_ece, kept
-- for the reliability diagram of the HTML report.
CREATE TABLE calibration_bins (
    run_id     VARCHAR NOT NULL,
    modality   VARCHAR NOT NULL,
    bin        INTEGER NOT NULL,
    n          BIGINT NOT NULL,
    confidence DOUBLE NOT NULL,   -- summed over the bin's items
    correct    BIGINT NOT NULL    -- items whose refined (or joint) label is the gold one
);

INSERT INTO schema_migrations VALUES (3, 'refined_labels', '2026-12-01 00:00:00+00');

-- The labels of the latest succeeded run, and nothing else: readers never see half a run.
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW current_labels AS
SELECT l.*
FROM item_labels AS l
WHERE l.run_id = (
    SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
);

-- One label per run and item, from all its modalities together: what downstream systems consume.
-- Succeeded runs only (current_labels is the latest one alone): a run's rows are loaded by the transaction
-- that marks it succeeded, and a re-run that fails leaves rows and status alone.
-- label       the joint label: the argmax of the item's joint posterior, the product of its modalities'
--             refined posteriors (METHOD.md step 8), each modality weighted (pairwise_core/joint.py).
--             An item whose other modalities were rejected uses the ones it has.
-- confidence  the joint posterior probability of the label. Calibrated: of the items with confidence
--             about p, a share about p is right (runs.details.calibration says how it was fitted: 'gold',
--             out of fold against the catalog's labels, or 'label-free'); agreement_metrics.gold_ece
--             measures it when the run has a gold column.
-- status      what the modalities say, for a downstream system to act on:
--               agreed           every modality of the item (two or more) gives the joint label itself;
--               split            the modalities' own refined labels differ: the joint posterior decided;
--               single_modality  only one modality labelled the item (the others were rejected);
--             runs from before the joint label (schema version < 3) keep their old statuses (agreed,
--             single_modality, majority, by_margin, undecided) and a NULL confidence.
--             Auto-accept by confidence (e.g. >= 0.9), send 'split' and low-confidence items to review.
-- agreeing_modalities  how many modalities' own refined labels are the joint label; n_modalities: how many
--             modalities labelled the item.
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW consensus_labels AS
SELECT j.run_id, j.item_id, j.label, j.confidence, j.status, j.agreeing_modalities, j.n_modalities
FROM joint_labels AS j
WHERE j.run_id IN (SELECT run_id FROM runs WHERE status = 'succeeded');
