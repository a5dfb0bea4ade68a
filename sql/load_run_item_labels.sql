-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO item_labels BY NAME SELECT * FROM read_parquet($files)
