-- Per class of the joint label, over its items with a gold label: how many, their mean confidence and the share
-- right against gold. A class whose labels are far more confident than right (a class that draws other classes'
-- items, as one with many classes and one modality may) lets errors through any confidence threshold; the
-- report names such classes (tasks/report.py, overconfident_classes). No rows without a gold column.
SELECT label AS class, count(*) AS n_gold, avg(confidence) AS mean_confidence,
       avg(CAST(label = gold_class AS INTEGER)) AS gold_accuracy
FROM joint_labels
WHERE run_id = $run_id AND confidence IS NOT NULL AND label IS NOT NULL AND gold_class IS NOT NULL
GROUP BY label
