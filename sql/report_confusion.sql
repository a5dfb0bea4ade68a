-- Confusion counts of a run per method: modality_a's labels (pred) against modality_b's (ref), for every
-- pair of modalities (a < b), and against the gold label (modality_b = 'gold'). Same columns as
-- metrics_confusion.sql; counted here in one query since the run's labels are committed.
WITH long AS (
    SELECT item_id, modality, 'base' AS method, base_class AS label FROM item_labels WHERE run_id = $run_id
    UNION ALL
    SELECT item_id, modality, 'pairwise' AS method, pairwise_class AS label FROM item_labels WHERE run_id = $run_id
),
gold AS (
    SELECT DISTINCT item_id, gold_class AS label FROM item_labels WHERE run_id = $run_id AND gold_class IS NOT NULL
)
SELECT p.method, p.modality AS modality_a, r.modality AS modality_b, p.label AS pred, r.label AS ref,
       count(*) AS n
FROM long AS p JOIN long AS r ON p.item_id = r.item_id AND p.method = r.method AND p.modality < r.modality
GROUP BY ALL
UNION ALL
SELECT p.method, p.modality AS modality_a, 'gold' AS modality_b, p.label AS pred, g.label AS ref, count(*) AS n
FROM long AS p JOIN gold AS g ON p.item_id = g.item_id
GROUP BY ALL
ORDER BY method, modality_a, modality_b, ref, pred
