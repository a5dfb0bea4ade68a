-- An incremental night's plan: the live catalog items gone from the source (`source`: its ids).
SELECT c.item_id
FROM catalog_items AS c
ANTI JOIN source AS s ON s.item_id = c.item_id
WHERE c.deleted_by IS NULL
