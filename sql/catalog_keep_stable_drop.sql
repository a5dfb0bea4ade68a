-- In the commit transaction of a refit with --refit-stability: the kept items (catalog_keep_stable) keep their
-- catalog row, so the run's labels of them change nothing.
DELETE FROM touched WHERE item_id IN (SELECT item_id FROM kept)
