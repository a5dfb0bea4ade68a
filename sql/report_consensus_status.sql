-- How the run's items got their one label (statuses of consensus_labels), with the statuses' mean
-- confidence and, when the run has a gold column, their accuracy against it. Runs made before schema
-- version 3 have other statuses and no confidence (NULL). joint_labels, not the view: the view hides
-- gold_class, and a report only shows succeeded runs anyway.
SELECT status, count(*) AS n_items, count(*) / sum(count(*)) OVER () AS share,
       avg(confidence) AS mean_confidence,
       avg(CAST(label = gold_class AS INTEGER)) FILTER (WHERE gold_class IS NOT NULL) AS gold_accuracy
FROM joint_labels
WHERE run_id = $run_id
GROUP BY status
ORDER BY n_items DESC, status
