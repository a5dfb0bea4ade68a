-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO confusion_counts BY NAME SELECT * FROM read_parquet($files)
