-- The latest succeeded run and the class parents it labelled under (runs.details.parents; absent in runs
-- committed before it was recorded): an incremental night carries that run's parent labels over.
SELECT run_id, details->'$.parents' AS parents, json_exists(details, '$.parents') AS recorded
FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
