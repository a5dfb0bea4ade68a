-- In the commit transaction of a run without staged catalog_state (a commit of rows alone, or a night that
-- labelled nothing): the items of its joint_labels rows, fingerprints unknown.
CREATE OR REPLACE TEMP TABLE touched AS
SELECT item_id, NULL::UBIGINT AS fingerprint, NULL::VARCHAR AS version, label, confidence, status
FROM joint_labels
WHERE run_id = $run_id
