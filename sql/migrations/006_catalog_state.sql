-- Schema version 6: the nightly cycle (issue 21). A run may label only part of the catalog (an incremental
-- night), so the catalog's current state is kept apart from the runs: one row per item ever labelled.
-- item_id      the item
-- label        its consensus label (joint_labels.label); NULL when every modality of it was rejected
-- confidence   its joint posterior probability
-- status       joint_labels.status, or 'rejected' (no modality usable)
-- model_id     the model that labelled it (NULL for runs before version 5)
-- run_id       the run that last labelled it: its item_labels and joint_labels rows are that run's
-- labelled_at  when that run committed
-- fingerprint  a hash of its embeddings' bytes when it was labelled (tasks/fingerprint.py); NULL: unknown
-- version      the value of the run's --changed-column when it was labelled (as text); NULL: none given
-- deleted_by   the run that found it gone from the source; NULL while it is live
-- No primary key: the commit replaces rows by delete-and-insert in one transaction, which DuckDB's
-- unique index refuses for the same key, and item ids are unique in every source (validation).
CREATE TABLE catalog_items (
    item_id     VARCHAR NOT NULL,
    label       VARCHAR,
    confidence  REAL,
    status      VARCHAR NOT NULL,
    model_id    VARCHAR,
    run_id      VARCHAR NOT NULL,
    labelled_at TIMESTAMPTZ NOT NULL,
    fingerprint UBIGINT,
    version     VARCHAR,
    deleted_by  VARCHAR
);

-- The source files whose every item's fingerprint catalog_items holds, as they were then: an incremental
-- night without --changed-column skips a file of the same path, size and modification time (its bytes, so its
-- items' embeddings, are the ones fingerprinted) instead of decoding it again. Each commit that fingerprinted
-- a whole source replaces the rows; DuckDB table sources have none.
CREATE TABLE catalog_files (
    path     VARCHAR NOT NULL,
    size     BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    run_id   VARCHAR NOT NULL
);

-- A file written before: its latest succeeded run is the catalog's state (fingerprints unknown, so the
-- first incremental night relabels these items).
INSERT INTO catalog_items
SELECT j.item_id, j.label, j.confidence, j.status, r.model_id, j.run_id, r.finished_at, NULL, NULL, NULL
FROM joint_labels AS j
JOIN runs AS r ON r.run_id = j.run_id
WHERE j.run_id = (SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1);

-- One row per run and item whose consensus label appeared, changed or went away.
-- change  new: the item entered the catalog with a label; relabelled: its label changed (or went: NULL
--         new_label, every modality rejected); deleted: it left the source.
-- cause   new_item, embedding_changed (its fingerprint or --changed-column value differs), refit (the same
--         embeddings, a new model), removed (deleted).
CREATE TABLE label_changes (
    run_id         VARCHAR NOT NULL,
    item_id        VARCHAR NOT NULL,
    change         VARCHAR NOT NULL CHECK (change IN ('new', 'relabelled', 'deleted')),
    old_label      VARCHAR,
    new_label      VARCHAR,
    old_confidence REAL,
    new_confidence REAL,
    cause          VARCHAR NOT NULL CHECK (cause IN ('new_item', 'embedding_changed', 'refit', 'removed'))
);

-- Per run and modality, how far the items the run labelled are from the model's fit sample
-- (pairwise_core/drift.py). modality 'consensus': the class shares of the consensus labels.
-- value, threshold: the score and the threshold used at these sample sizes; drifted: value > threshold.
-- n_reference, n_current: the rows compared on each side.
CREATE TABLE drift_metrics (
    run_id      VARCHAR NOT NULL,
    modality    VARCHAR NOT NULL,
    metric      VARCHAR NOT NULL,
    value       DOUBLE NOT NULL,
    threshold   DOUBLE NOT NULL,
    drifted     BOOLEAN NOT NULL,
    n_reference BIGINT NOT NULL,
    n_current   BIGINT NOT NULL
);
