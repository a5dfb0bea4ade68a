UPDATE runs
SET status = 'succeeded', finished_at = now(), error = NULL,
    n_items = $n_items, n_classes = $n_classes, modalities = $modalities, details = $details
WHERE run_id = $run_id
