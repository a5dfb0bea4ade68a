-- Confusion counts of one run's labels, per method and modality pair (modality_b = 'gold' for gold).
-- Expects a relation `labels` with the columns of item_labels. Counts add up across partitions, so
-- each partition's labels are counted on their own and memory stays bounded by a partition.
-- Each pair of an item's modalities is joined once for the three methods (a join per method took twice as
-- long), and the gold label is read from the row itself: every row of an item carries the item's gold_class.
WITH pairs AS MATERIALIZED (
    SELECT a.modality AS modality_a, b.modality AS modality_b,
           a.base_class AS base_a, b.base_class AS base_b, a.pairwise_class AS pairwise_a,
           b.pairwise_class AS pairwise_b, a.refined_class AS refined_a, b.refined_class AS refined_b
    FROM labels AS a JOIN labels AS b ON a.item_id = b.item_id AND a.modality < b.modality
)
SELECT 'base' AS method, modality_a, modality_b, base_a AS pred, base_b AS ref, count(*) AS n
FROM pairs
GROUP BY ALL
UNION ALL
SELECT 'pairwise', modality_a, modality_b, pairwise_a, pairwise_b, count(*)
FROM pairs
GROUP BY ALL
UNION ALL
SELECT 'refined', modality_a, modality_b, refined_a, refined_b, count(*)
FROM pairs
WHERE refined_a IS NOT NULL AND refined_b IS NOT NULL
GROUP BY ALL
UNION ALL
SELECT 'base', modality, 'gold', base_class, gold_class, count(*)
FROM labels
WHERE gold_class IS NOT NULL
GROUP BY ALL
UNION ALL
SELECT 'pairwise', modality, 'gold', pairwise_class, gold_class, count(*)
FROM labels
WHERE gold_class IS NOT NULL
GROUP BY ALL
UNION ALL
SELECT 'refined', modality, 'gold', refined_class, gold_class, count(*)
FROM labels
WHERE gold_class IS NOT NULL AND refined_class IS NOT NULL
GROUP BY ALL
