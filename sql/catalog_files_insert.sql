-- ...replaced by the source's files as the run found them.
INSERT INTO catalog_files SELECT path, size, mtime_ns, $run_id FROM read_parquet($files)
