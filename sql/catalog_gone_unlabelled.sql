-- In the commit transaction of a full run: the live items it did not label are gone from the source.
CREATE OR REPLACE TEMP TABLE gone AS
SELECT c.item_id
FROM catalog_items AS c
ANTI JOIN touched AS t ON t.item_id = c.item_id
WHERE c.deleted_by IS NULL
