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
)
