-- Confusion counts of a run per method: modality_a's labels (pred) against modality_b's (ref), for every
-- pair of modalities (a < b), and against the gold label (modality_b = 'gold').
SELECT method, modality_a, modality_b, pred, ref, n
FROM confusion_counts
WHERE run_id = $run_id
ORDER BY method, modality_a, modality_b, ref, pred
