-- Agreement and gold metrics of one run from its confusion counts (a relation `confusion` with the
-- columns of tasks/metric_counts.CONFUSION_SCHEMA but level, possibly several rows per cell, one per partition).
-- Weighted F1 of modality_a's labels against modality_b's (the reference), weights = support in the
-- reference; a class with no true or no predicted items has F1 0 (scikit-learn's zero_division=0).
WITH per_class AS (
    SELECT method, modality_a, modality_b, cls,
           sum(tp) AS tp, sum(is_ref) AS support, sum(is_pred) AS predicted
    FROM (
        SELECT method, modality_a, modality_b, ref AS cls, CASE WHEN pred = ref THEN n ELSE 0 END AS tp,
               n AS is_ref, 0 AS is_pred
        FROM confusion
        UNION ALL
        SELECT method, modality_a, modality_b, pred AS cls, 0, 0, n FROM confusion
    )
    GROUP BY ALL
),
f1 AS (
    SELECT method, modality_a, modality_b,
           sum(support * CASE WHEN support + predicted > 0 THEN 2.0 * tp / (support + predicted) ELSE 0 END)
               / sum(support) AS value,
           sum(tp) / sum(support) AS accuracy
    FROM per_class
    GROUP BY ALL
)
SELECT $run_id AS run_id, method,
       CASE WHEN modality_b = 'gold' THEN 'gold_f1_weighted' ELSE 'agreement_f1_weighted' END AS metric,
       modality_a, modality_b, value
FROM f1
UNION ALL
SELECT $run_id, method, 'gold_accuracy', modality_a, modality_b, accuracy FROM f1 WHERE modality_b = 'gold'
ORDER BY metric, method, modality_a, modality_b
