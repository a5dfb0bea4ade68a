-- One row per run x rejected item (x modality, when the rejection is for one modality only).
CREATE TABLE IF NOT EXISTS rejected_items (
    run_id   VARCHAR NOT NULL,
    item_id  VARCHAR,
    modality VARCHAR,
    reason   VARCHAR NOT NULL
)
