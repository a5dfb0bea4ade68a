-- One row per live item of the catalog, across runs: what downstream systems read after every night.
-- label, confidence, status: as consensus_labels (status 'rejected': no modality of the item was usable);
-- parent_label, parent_confidence: as consensus_labels (NULL without parents);
-- model_id and run_id: the model and the run that last labelled the item; labelled_at: when it committed.
-- An incremental night relabels new and changed items only: the others keep their row.
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW catalog_labels AS
SELECT item_id, label, confidence, status, model_id, run_id, labelled_at, parent_label, parent_confidence
FROM catalog_items
WHERE deleted_by IS NULL
