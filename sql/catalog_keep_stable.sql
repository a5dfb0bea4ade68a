-- In the commit transaction of a refit with --refit-stability: an item whose embeddings did not change keeps
-- its label (its catalog row, from the model before) unless the new model gives another label at least
-- $stability confidence. The kept items, with the --changed-column value the run read (catalog_keep_stable_drop
-- takes them out of `touched`, catalog_keep_stable_version records that value on their rows).
CREATE OR REPLACE TEMP TABLE kept AS
SELECT t.item_id, t.version
FROM touched AS t
JOIN catalog_items AS c ON c.item_id = t.item_id AND c.deleted_by IS NULL
WHERE c.model_id IS DISTINCT FROM $model_id AND c.fingerprint = t.fingerprint
  AND c.label IS NOT NULL AND t.label IS DISTINCT FROM c.label AND t.confidence < $stability
