-- The schema as the code of commit 2cdb3ef of 2026-11-22 left a fresh file: annotation_issues.raw_score (and df12857, a comment changed).
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

-- One row per run x item x modality. gold_class is the run's gold column (NULL without one);
-- given_gap and given_h2h are the evidence against it (see sql/create_annotation_issues.sql).
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
-- (sql/annotation_issues.sql): first how many modalities' pairwise labels disagree, then how far the
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

-- Files written before the review columns existed get them (NULL for their runs).
ALTER TABLE item_labels ADD COLUMN IF NOT EXISTS given_gap REAL;

-- Files written before the review columns existed get them (NULL for their runs).
ALTER TABLE item_labels ADD COLUMN IF NOT EXISTS given_h2h REAL;

-- The labels of the latest succeeded run, and nothing else: readers never see half a run.
CREATE OR REPLACE VIEW current_labels AS
SELECT l.*
FROM item_labels AS l
WHERE l.run_id = (
    SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
);

-- One label per run and item, from its modalities' pairwise labels: what downstream systems consume.
-- status:
--   agreed           every labelled modality (at least two) gives the same label;
--   single_modality  only one modality labelled the item (the others were rejected);
--   majority         more modalities give this label than any other;
--   by_margin        a tie in votes, broken by the larger normalized pairwise margin, (x . w) / |x * m|:
--                    a difference of masked cosines in every modality, so margins compare across them;
--   undecided        a tie in votes and in margin; label and confidence are NULL.
-- confidence: the smallest margin among the modalities giving the label (agreed, majority,
-- single_modality), or the winning margin minus the best margin for another label (by_margin).
-- agreeing_modalities: how many modalities give the label (for undecided, the tied count).
CREATE OR REPLACE VIEW consensus_labels AS
WITH votes AS (
    SELECT run_id, item_id, pairwise_class AS label, count(*) AS votes,
           max(pairwise_margin) AS top_margin, min(pairwise_margin) AS low_margin
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
SELECT run_id, item_id,
       CASE WHEN status = 'undecided' THEN NULL ELSE label END AS label,
       CASE status
           WHEN 'by_margin' THEN top_margin - next_margin
           WHEN 'undecided' THEN NULL
           ELSE low_margin
       END AS confidence,
       CAST(votes AS INTEGER) AS agreeing_modalities,
       status
FROM decided;
