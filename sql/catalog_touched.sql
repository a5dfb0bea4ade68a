-- In the commit transaction: the items the run labelled (its staged catalog_state parts), with their new state.
CREATE OR REPLACE TEMP TABLE touched AS
SELECT s.item_id, s.fingerprint, s.version, j.label, j.confidence, coalesce(j.status, 'rejected') AS status,
       j.parent_label, j.parent_confidence
FROM read_parquet($files) AS s
LEFT JOIN joint_labels AS j ON j.run_id = $run_id AND j.item_id = s.item_id
