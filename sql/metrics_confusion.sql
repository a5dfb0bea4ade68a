-- Confusion counts of one run's labels, per method and modality pair (modality_b = 'gold' for gold).
-- Expects a relation `labels` with the columns of item_labels. Counts add up across partitions, so
-- each partition's labels are counted on their own and memory stays bounded by a partition.
-- Each pair of an item's modalities is joined once for the three methods, which are unnested from the joined
-- row (a join per method took twice as long; a MATERIALIZED CTE read by three aggregates hung DuckDB 1.5 at 500
-- classes), and the gold label is read from the row itself: every row of an item carries its gold_class.
SELECT method, modality_a, modality_b, pred, ref, count(*) AS n
FROM (
    SELECT a.modality AS modality_a, b.modality AS modality_b,
           unnest(['base', 'pairwise', 'refined']) AS method,
           unnest([a.base_class, a.pairwise_class, a.refined_class]) AS pred,
           unnest([b.base_class, b.pairwise_class, b.refined_class]) AS ref
    FROM labels AS a JOIN labels AS b ON a.item_id = b.item_id AND a.modality < b.modality
)
WHERE pred IS NOT NULL AND ref IS NOT NULL  -- only refined labels can be missing
GROUP BY ALL
UNION ALL
SELECT method, modality, 'gold', pred, gold_class, count(*)
FROM (
    SELECT modality, gold_class, unnest(['base', 'pairwise', 'refined']) AS method,
           unnest([base_class, pairwise_class, refined_class]) AS pred
    FROM labels
    WHERE gold_class IS NOT NULL
)
WHERE pred IS NOT NULL
GROUP BY ALL
