-- In the commit transaction: the items gone from the source leave the current views.
UPDATE catalog_items SET deleted_by = $run_id
WHERE deleted_by IS NULL AND item_id IN (SELECT item_id FROM gone)
