-- In the commit transaction of a night with a --changed-column, before catalog_items takes the labelled items'
-- state: the live items without a recorded version take the source's value ($source: the night's staged ids
-- and values). The night checked each of them by its fingerprint; one that changed was labelled, and its new
-- row takes the same value.
UPDATE catalog_items AS c SET version = s.version
FROM read_parquet($source) AS s
WHERE c.item_id = s.item_id AND c.deleted_by IS NULL AND c.version IS NULL AND s.version IS NOT NULL
