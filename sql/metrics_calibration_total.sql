-- A run's calibration_bins rows: the per-partition sums (a relation `calibration`) added up.
SELECT $run_id AS run_id, modality, bin, sum(n)::BIGINT AS n, sum(confidence) AS confidence,
       sum(correct)::BIGINT AS correct
FROM calibration
GROUP BY ALL
ORDER BY ALL
