-- Base against pairwise, one row per metric and modality pair.
SELECT metric, modality_a, modality_b,
       max(value) FILTER (WHERE method = 'base') AS base,
       max(value) FILTER (WHERE method = 'pairwise') AS pairwise
FROM agreement_metrics
WHERE run_id = $run_id
GROUP BY ALL
ORDER BY metric, modality_a, modality_b
