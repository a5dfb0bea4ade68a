-- In the commit transaction of a run without staged catalog_state (a commit of rows alone, or a night that
-- read no partition): the items of its item_labels and joint_labels rows, fingerprints unknown.
CREATE OR REPLACE TEMP TABLE touched AS
SELECT i.item_id, NULL::UBIGINT AS fingerprint, NULL::VARCHAR AS version, j.label, j.confidence,
       coalesce(j.status, 'rejected') AS status, j.parent_label, j.parent_confidence
FROM (SELECT item_id FROM joint_labels WHERE run_id = $run_id
      UNION SELECT item_id FROM item_labels WHERE run_id = $run_id) AS i
LEFT JOIN joint_labels AS j ON j.run_id = $run_id AND j.item_id = i.item_id
