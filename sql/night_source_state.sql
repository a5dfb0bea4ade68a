-- An incremental night's plan (tasks/night.py): each source item, its partition, and what the catalog holds of
-- it, in partition order. $source: the items' ids, --changed-column values and partitions (item_id, version,
-- part), read without the embeddings and staged to Parquet. relabel: the run labelled it before (a re-run of the
-- same run id labels it again). unversioned: the catalog has it without a version (a run without
-- --changed-column labelled it) or the source gives it none (a null value), so whether it changed is not known
-- from the version: its fingerprint says (a null version on both sides was taken for unchanged, and the item
-- kept its label whatever its embeddings became).
SELECT s.part, s.item_id, s.version,
       c.item_id IS NULL AS new,
       c.fingerprint,
       c.version IS DISTINCT FROM s.version AS version_changed,
       c.item_id IS NOT NULL AND (c.version IS NULL OR s.version IS NULL) AS unversioned,
       c.run_id = $run_id AS relabel
FROM read_parquet($source) AS s
LEFT JOIN catalog_items AS c ON c.item_id = s.item_id AND c.deleted_by IS NULL
ORDER BY s.part
