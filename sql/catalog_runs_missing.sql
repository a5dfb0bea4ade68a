-- In a run's commit, before COMMIT: how many live catalog rows name a run that runs does not hold (none in a
-- consistent file: a run's rows commit with its row; tasks/store.py _check_succeeded).
SELECT count(*) FROM catalog_items AS c
WHERE c.deleted_by IS NULL AND NOT EXISTS (SELECT 1 FROM runs AS r WHERE r.run_id = c.run_id)
