-- In the commit transaction of a night with a --changed-column, before catalog_items takes the labelled items'
-- state: the live items without a version, recorded or in the source, take the source's value ($source: the
-- night's staged ids and values), a null included. The night checked each of them by its fingerprint; one that
-- changed was labelled, and its new row takes the same value. A null is recorded too: a value that went to null
-- and came back with other embeddings was the recorded one, and the item kept its old label.
UPDATE catalog_items AS c SET version = s.version
FROM read_parquet($source) AS s
WHERE c.item_id = s.item_id AND c.deleted_by IS NULL AND (c.version IS NULL OR s.version IS NULL)
  AND c.version IS DISTINCT FROM s.version
