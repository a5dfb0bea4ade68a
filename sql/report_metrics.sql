-- Base, pairwise and refined side by side, one row per metric, level and modality pair, with the gains of
-- each step. modality_a 'joint' (the one label per item) and gold_ece (lower is better) exist for 'refined'
-- only. level 'parent': the methods *_parent (the classes' parents), after the classes' own rows.
WITH levelled AS (
    SELECT metric, CASE WHEN ends_with(method, '_parent') THEN 'parent' ELSE 'class' END AS level,
           regexp_replace(method, '_parent$', '') AS method, modality_a, modality_b, value
    FROM agreement_metrics
    WHERE run_id = $run_id
),
wide AS (
    SELECT metric, level, modality_a, modality_b,
           max(value) FILTER (WHERE method = 'base') AS base,
           max(value) FILTER (WHERE method = 'pairwise') AS pairwise,
           max(value) FILTER (WHERE method = 'refined') AS refined
    FROM levelled
    GROUP BY ALL
)
SELECT metric, level, modality_a, modality_b, base, pairwise, refined,
       pairwise - base AS pairwise_minus_base, refined - pairwise AS refined_minus_pairwise
FROM wide
ORDER BY level = 'parent', metric, modality_a = 'joint', modality_a, modality_b
