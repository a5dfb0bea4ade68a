-- In the commit transaction: the run takes the succeeded attempt's start and parameters, and its results.
UPDATE runs
SET status = 'succeeded', started_at = attempt.started_at, finished_at = now(), params = attempt.params,
    error = NULL, n_items = $n_items, n_classes = $n_classes, modalities = $modalities, details = $details,
    model_id = $model_id
FROM run_attempts AS attempt
WHERE runs.run_id = $run_id AND attempt.run_id = $run_id AND attempt.attempt = $attempt
