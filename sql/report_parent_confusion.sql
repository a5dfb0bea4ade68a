-- The run's joint parent labels (consensus_labels.parent_label, pred) against the gold class (gold), counted:
-- the HTML report maps each gold class to its parent (runs.details.parents) for the parent-level heatmap. No
-- rows for a run whose classes have no parents, or without gold values.
SELECT gold_class AS gold, parent_label AS pred, count(*) AS n
FROM joint_labels
WHERE run_id = $run_id AND parent_label IS NOT NULL AND gold_class IS NOT NULL
GROUP BY gold_class, parent_label
ORDER BY gold, pred
