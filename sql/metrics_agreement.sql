-- Agreement and gold metrics of one run from its labels. Expects a relation `labels` with the columns of
-- item_labels. Weighted F1 of modality_a's labels against modality_b's (the reference), weights = support
-- in the reference; a class with no true or no predicted items has F1 0 (scikit-learn's zero_division=0).
WITH long AS (
    SELECT item_id, modality, 'base' AS method, base_class AS label FROM labels
    UNION ALL
    SELECT item_id, modality, 'pairwise' AS method, pairwise_class AS label FROM labels
),
gold AS (
    SELECT DISTINCT item_id, gold_class AS label FROM labels WHERE gold_class IS NOT NULL
),
compared AS (
    SELECT p.method, p.modality AS modality_a, r.modality AS modality_b, p.label AS pred, r.label AS ref
    FROM long AS p JOIN long AS r ON p.item_id = r.item_id AND p.method = r.method AND p.modality < r.modality
    UNION ALL
    SELECT p.method, p.modality AS modality_a, 'gold' AS modality_b, p.label AS pred, g.label AS ref
    FROM long AS p JOIN gold AS g ON p.item_id = g.item_id
),
per_class AS (
    SELECT method, modality_a, modality_b, cls,
           sum(tp) AS tp, sum(is_ref) AS support, sum(is_pred) AS predicted
    FROM (
        SELECT method, modality_a, modality_b, ref AS cls, (pred = ref)::INTEGER AS tp, 1 AS is_ref, 0 AS is_pred
        FROM compared
        UNION ALL
        SELECT method, modality_a, modality_b, pred AS cls, 0, 0, 1 FROM compared
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
