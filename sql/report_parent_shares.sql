-- The share of the run's items in each parent by their joint parent label (consensus_labels.parent_label),
-- with its mean confidence. No rows for a run whose classes have no parents.
SELECT parent_label AS parent, count(*) AS n_items, count(*) / sum(count(*)) OVER () AS share,
       avg(parent_confidence) AS mean_confidence
FROM joint_labels
WHERE run_id = $run_id AND parent_label IS NOT NULL
GROUP BY parent_label
ORDER BY n_items DESC, parent
