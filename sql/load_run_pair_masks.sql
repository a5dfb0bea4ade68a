-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO pair_masks BY NAME SELECT * FROM read_parquet($files)
