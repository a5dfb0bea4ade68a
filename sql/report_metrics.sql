-- Base, pairwise and refined side by side, one row per metric and modality pair, with the gains of each
-- step. modality_a 'joint' (the one label per item) and gold_ece (lower is better) exist for 'refined' only.
WITH wide AS (
    SELECT metric, modality_a, modality_b,
           max(value) FILTER (WHERE method = 'base') AS base,
           max(value) FILTER (WHERE method = 'pairwise') AS pairwise,
           max(value) FILTER (WHERE method = 'refined') AS refined
    FROM agreement_metrics
    WHERE run_id = $run_id
    GROUP BY ALL
)
SELECT metric, modality_a, modality_b, base, pairwise, refined,
       pairwise - base AS pairwise_minus_base, refined - pairwise AS refined_minus_pairwise
FROM wide
ORDER BY metric, modality_a = 'joint', modality_a, modality_b
