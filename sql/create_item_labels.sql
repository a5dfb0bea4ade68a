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
)
