-- The reliability diagram's points: per modality (and 'joint') and confidence bin, the items, their mean
-- confidence and the share right against gold, with the modality's ECE over the 10 bins (as gold_ece).
-- No rows for runs without a gold column.
SELECT modality, bin, n, confidence / n AS mean_confidence, correct / n AS accuracy,
       sum(abs(correct - confidence)) OVER by_modality / sum(n) OVER by_modality AS ece
FROM calibration_bins
WHERE run_id = $run_id AND n > 0
WINDOW by_modality AS (PARTITION BY modality)
ORDER BY modality = 'joint', modality, bin
