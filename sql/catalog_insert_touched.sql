-- ...replaced by their new state, labelled by this run and its model.
INSERT INTO catalog_items
SELECT item_id, label, confidence, status, $model_id, $run_id, now(), fingerprint, version, NULL, parent_label,
       parent_confidence
FROM touched
