-- In the commit transaction: the items the run labelled take their new state, labelled by this run and its
-- model; the ones catalog_items had (live or deleted before) are updated in place, the others inserted.
-- An item has one row, so one MERGE does what deleting the old rows and inserting the new ones did, at half
-- the cost when a relabel touches every row (1M items: 2.0-3.5 s -> 1.0-1.4 s, COMMIT included). A run without a
-- --changed-column ($versioned false) keeps the recorded version of an item whose embeddings did not change.
MERGE INTO catalog_items AS c
USING touched AS t ON c.item_id = t.item_id
WHEN MATCHED THEN UPDATE SET
    label = t.label, confidence = t.confidence, status = t.status, model_id = $model_id, run_id = $run_id,
    labelled_at = now(), fingerprint = t.fingerprint,
    version = CASE WHEN $versioned OR c.fingerprint IS DISTINCT FROM t.fingerprint THEN t.version ELSE c.version END,
    deleted_by = NULL,
    parent_label = t.parent_label, parent_confidence = t.parent_confidence
WHEN NOT MATCHED THEN INSERT VALUES (
    t.item_id, t.label, t.confidence, t.status, $model_id, $run_id, now(), t.fingerprint, t.version, NULL,
    t.parent_label, t.parent_confidence
)
