-- Class distribution per modality and method: agreement alone can be gamed by piling items into one class.
SELECT modality, class, method, count(*) AS n_items,
       count(*) / sum(count(*)) OVER (PARTITION BY modality, method) AS share
FROM (
    SELECT modality, base_class AS class, 'base' AS method FROM item_labels WHERE run_id = $run_id
    UNION ALL
    SELECT modality, pairwise_class, 'pairwise' FROM item_labels WHERE run_id = $run_id
)
GROUP BY modality, class, method
ORDER BY modality, class, method
