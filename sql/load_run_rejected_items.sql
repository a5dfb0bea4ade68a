-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO rejected_items BY NAME SELECT * FROM read_parquet($files)
