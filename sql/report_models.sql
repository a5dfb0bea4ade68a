-- The stored models, newest first (`pairwise models`).
SELECT model_id, run_id, fitted_at, n_items, n_classes, modalities FROM models ORDER BY fitted_at DESC, model_id DESC
