-- In the commit transaction of a refit with --refit-stability: an item whose embeddings did not change keeps
-- its label (its catalog row, from the model before) unless the new model gives another label at least
-- $stability confidence; and only while that row's model had the new one's classes (class_hash) and its run
-- the same parents ($parents, as runs.details.parents records them): a row of other classes or another
-- taxonomy is not kept; nor is a row this run id's first attempt wrote (a re-run replaces that attempt's
-- labels whole: its kept row would name this run but hold a label its rows no longer have). The kept items,
-- with the --changed-column value the run read (catalog_keep_stable_drop takes them out of `touched`,
-- catalog_keep_stable_version records that value).
CREATE OR REPLACE TEMP TABLE kept AS
SELECT t.item_id, t.version
FROM touched AS t
JOIN catalog_items AS c ON c.item_id = t.item_id AND c.deleted_by IS NULL
JOIN models AS old ON old.model_id = c.model_id
JOIN models AS new ON new.model_id = $model_id
JOIN runs AS r ON r.run_id = c.run_id
WHERE c.model_id IS DISTINCT FROM $model_id AND c.run_id <> $run_id AND c.fingerprint = t.fingerprint
  AND c.label IS NOT NULL AND t.label IS DISTINCT FROM c.label AND t.confidence < $stability
  AND old.class_hash = new.class_hash
  AND json(coalesce(r.details -> '$.parents', 'null')) = json($parents)
