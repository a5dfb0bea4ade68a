-- Bulk-load a run's staged Parquet parts (Arrow, not row inserts).
INSERT INTO calibration_bins BY NAME SELECT * FROM read_parquet($files)
