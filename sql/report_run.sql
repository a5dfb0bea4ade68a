SELECT run_id, status, started_at, finished_at, n_items, n_classes, modalities, params, details, error, model_id
FROM runs WHERE run_id = $run_id
