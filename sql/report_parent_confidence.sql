-- The joint parent labels' confidence (consensus_labels.parent_confidence) in the three bands of the joint
-- label's (>= 0.9: auto-accept; 0.5 to 0.9; < 0.5), counted per gold class and parent label: the report maps
-- each gold class to its parent (runs.details.parents) for the bands' accuracy at the parent level. No rows
-- for a run whose classes have no parents.
SELECT CASE WHEN parent_confidence >= 0.9 THEN '≥ 0.9' WHEN parent_confidence >= 0.5 THEN '0.5–0.9' ELSE '< 0.5' END
           AS band,
       gold_class AS gold, parent_label AS pred, count(*) AS n
FROM joint_labels
WHERE run_id = $run_id AND parent_confidence IS NOT NULL
GROUP BY band, gold_class, parent_label
ORDER BY band, gold, pred
