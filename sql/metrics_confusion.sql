-- Confusion counts of one run's labels, per method and modality pair (modality_b = 'gold' for gold).
-- Expects a relation `labels` with the columns of item_labels. Counts add up across partitions, so
-- each partition's labels are counted on their own and memory stays bounded by a partition.
WITH long AS (
    SELECT item_id, modality, 'base' AS method, base_class AS label FROM labels
    UNION ALL
    SELECT item_id, modality, 'pairwise' AS method, pairwise_class AS label FROM labels
    UNION ALL
    SELECT item_id, modality, 'refined' AS method, refined_class AS label FROM labels WHERE refined_class IS NOT NULL
),
gold AS (
    SELECT DISTINCT item_id, gold_class AS label FROM labels WHERE gold_class IS NOT NULL
)
SELECT p.method, p.modality AS modality_a, r.modality AS modality_b, p.label AS pred, r.label AS ref,
       count(*) AS n
FROM long AS p JOIN long AS r ON p.item_id = r.item_id AND p.method = r.method AND p.modality < r.modality
GROUP BY ALL
UNION ALL
SELECT p.method, p.modality AS modality_a, 'gold' AS modality_b, p.label AS pred, g.label AS ref, count(*) AS n
FROM long AS p JOIN gold AS g ON p.item_id = g.item_id
GROUP BY ALL
