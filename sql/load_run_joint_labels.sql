-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO joint_labels BY NAME SELECT * FROM read_parquet($files)
