-- In the commit transaction of a refit with --refit-stability and a --changed-column: a kept item's row takes
-- the version the run read, so that later nights do not take it for changed and relabel it.
UPDATE catalog_items AS c SET version = k.version
FROM kept AS k
WHERE c.item_id = k.item_id AND c.deleted_by IS NULL
