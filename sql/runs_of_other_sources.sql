-- The runs of the file whose items came from another source than $items (the latest first): `pairwise demo`
-- refuses a file that holds any, since its full run would mark that catalog's items deleted.
SELECT run_id, params->>'items' AS items
FROM runs
WHERE (params->>'items') IS DISTINCT FROM $items
ORDER BY started_at DESC
