-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO annotation_issues BY NAME SELECT * FROM read_parquet($files)
