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
)
