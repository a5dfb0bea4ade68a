-- In the commit transaction of a re-run of a run id that had succeeded: the composed rows (label_changes_compose)
-- replace the attempt's own.
INSERT INTO label_changes BY NAME SELECT * FROM composed
