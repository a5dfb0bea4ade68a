-- Class distribution per modality and method: agreement alone can be gamed by piling items into one class.
-- The refined labels too, and the joint label (modality 'joint'): the labels catalog_labels serves.
SELECT modality, class, method, count(*) AS n_items,
       count(*) / sum(count(*)) OVER (PARTITION BY modality, method) AS share
FROM (
    SELECT modality, base_class AS class, 'base' AS method FROM item_labels WHERE run_id = $run_id
    UNION ALL
    SELECT modality, pairwise_class, 'pairwise' FROM item_labels WHERE run_id = $run_id
    UNION ALL
    SELECT modality, refined_class, 'refined' FROM item_labels WHERE run_id = $run_id AND refined_class IS NOT NULL
    UNION ALL
    SELECT 'joint', label, 'refined' FROM joint_labels WHERE run_id = $run_id AND label IS NOT NULL
)
GROUP BY modality, class, method
ORDER BY modality, class, method
