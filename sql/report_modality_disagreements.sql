-- Items whose modalities disagree on the pairwise label: the ones worth a human look.
SELECT item_id,
       map(list(modality ORDER BY modality), list(pairwise_class ORDER BY modality)) AS pairwise_class,
       map(list(modality ORDER BY modality), list(pairwise_margin ORDER BY modality)) AS pairwise_margin,
       any_value(gold_class) AS gold_class
FROM item_labels
WHERE run_id = $run_id
GROUP BY item_id
HAVING count(DISTINCT pairwise_class) > 1
ORDER BY item_id
