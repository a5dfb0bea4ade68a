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
