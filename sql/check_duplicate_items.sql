-- The items' null item_id (first row, if any: how many rows have none), then the first $examples item_ids (by
-- id) that occur more than once among the items, how often each does, and how many ids do in all. Expects a
-- relation `item_ids` with one column `value`: the items' item_id alone, read at validation without the
-- embeddings. DuckDB's aggregate spills to disk, so memory stays bounded.
SELECT value AS item_id, n, count(*) OVER () AS n_duplicated
FROM (SELECT value, count(*) AS n FROM item_ids GROUP BY value HAVING count(*) > 1 OR value IS NULL)
ORDER BY item_id NULLS FIRST
LIMIT $examples
