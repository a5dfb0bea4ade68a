-- Calibration sums of one partition: per modality (and 'joint') and equal-width confidence bin (10 bins,
-- a confidence of 1 in the last), the items, their summed confidence and how many are right against gold.
-- Sums add up across partitions (sql/metrics_ece.sql reads them). Expects relations `labels` and `joint`.
WITH scored AS (
    SELECT modality, refined_confidence AS confidence, refined_class = gold_class AS correct
    FROM labels WHERE gold_class IS NOT NULL
    UNION ALL
    SELECT 'joint', confidence, label = gold_class FROM joint WHERE gold_class IS NOT NULL AND label IS NOT NULL
)
SELECT modality, least(floor(confidence * 10), 9)::INTEGER AS bin, count(*) AS n,
       sum(confidence) AS confidence, count(*) FILTER (WHERE correct) AS correct
FROM scored
GROUP BY ALL
