-- An incremental night's plan: the live catalog items gone from the source ($source: its ids, staged to Parquet).
SELECT c.item_id
FROM catalog_items AS c
ANTI JOIN read_parquet($source) AS s ON s.item_id = c.item_id
WHERE c.deleted_by IS NULL
