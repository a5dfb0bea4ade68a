-- succeeded_attempts: more than 1 when the rows shown are a re-run of a run that had succeeded, whose
-- label_changes say what changed since before its first attempt (not since the catalog that attempt left).
SELECT r.run_id, r.status, r.started_at, r.finished_at, r.n_items, r.n_classes, r.modalities, r.params, r.details,
       r.error, r.model_id,
       (SELECT count(*) FROM run_attempts AS a WHERE a.run_id = r.run_id AND a.status = 'succeeded')
           AS succeeded_attempts
FROM runs AS r WHERE r.run_id = $run_id
