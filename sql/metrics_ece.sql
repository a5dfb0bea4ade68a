-- gold_ece of one run: the expected calibration error of the refined confidence against gold, per modality
-- and joint (sum over bins of |correct - confidence| / items), from the partitions' sums (a relation
-- `calibration` with the columns of tasks/metric_counts.CALIBRATION_SCHEMA but level, possibly several rows per bin).
WITH bins AS (
    SELECT modality, bin, sum(n) AS n, sum(confidence) AS confidence, sum(correct) AS correct
    FROM calibration
    GROUP BY ALL
)
SELECT $run_id AS run_id, 'refined' AS method, 'gold_ece' AS metric, modality AS modality_a, 'gold' AS modality_b,
       sum(abs(correct - confidence)) / sum(n) AS value
FROM bins
GROUP BY ALL
ORDER BY modality_a
