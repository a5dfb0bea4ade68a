-- Per modality, the labels of every live item of the catalog, from the run that last labelled it
-- (catalog_items): after a full run, that run's rows; after an incremental night, the night's rows for the
-- items it labelled and the earlier runs' for the others. Only committed runs: readers never see half a run.
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW current_labels AS
SELECT l.*
FROM item_labels AS l
JOIN catalog_items AS c ON c.run_id = l.run_id AND c.item_id = l.item_id
WHERE c.deleted_by IS NULL
