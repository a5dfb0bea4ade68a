-- The joint labels' confidence in three bands (>= 0.9: auto-accept; 0.5 to 0.9; < 0.5), with their share of
-- the items and, when the run has a gold column, their accuracy against it. No rows for runs made before
-- schema version 3 (NULL confidence).
SELECT CASE WHEN confidence >= 0.9 THEN '≥ 0.9' WHEN confidence >= 0.5 THEN '0.5–0.9' ELSE '< 0.5' END AS band,
       count(*) AS n_items, count(*) / sum(count(*)) OVER () AS share,
       avg(CAST(label = gold_class AS INTEGER)) FILTER (WHERE gold_class IS NOT NULL) AS gold_accuracy
FROM joint_labels
WHERE run_id = $run_id AND confidence IS NOT NULL
GROUP BY band
ORDER BY min(confidence) DESC
