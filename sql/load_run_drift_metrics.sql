-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO drift_metrics BY NAME SELECT * FROM read_parquet($files)
