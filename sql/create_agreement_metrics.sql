-- One row per run x method x metric x modality pair. modality_b = 'gold' for gold metrics.
CREATE TABLE IF NOT EXISTS agreement_metrics (
    run_id     VARCHAR NOT NULL,
    method     VARCHAR NOT NULL CHECK (method IN ('base', 'pairwise')),
    metric     VARCHAR NOT NULL,
    modality_a VARCHAR NOT NULL,
    modality_b VARCHAR NOT NULL,
    value      DOUBLE
)
