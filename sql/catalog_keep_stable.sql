-- In the commit transaction of a refit with --refit-stability: an item whose embeddings did not change keeps
-- its label (its catalog row, from the model before) unless the new model gives another label at least
-- $stability confidence.
DELETE FROM touched
WHERE item_id IN (
    SELECT t.item_id
    FROM touched AS t
    JOIN catalog_items AS c ON c.item_id = t.item_id AND c.deleted_by IS NULL
    WHERE c.model_id IS DISTINCT FROM $model_id AND c.fingerprint = t.fingerprint
      AND c.label IS NOT NULL AND t.label IS DISTINCT FROM c.label AND t.confidence < $stability
)
