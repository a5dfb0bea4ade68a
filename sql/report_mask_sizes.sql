-- How many dimensions each class pair's mask kept, per modality (one row per pair that has a mask).
SELECT modality, class_a, class_b, n_dims, fallback
FROM pair_masks
WHERE run_id = $run_id
ORDER BY modality, class_a, class_b
