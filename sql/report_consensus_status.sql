-- How the run's items got their one consensus label (statuses of the consensus_labels view).
SELECT status, count(*) AS n_items, count(*) / sum(count(*)) OVER () AS share
FROM consensus_labels
WHERE run_id = $run_id
GROUP BY status
ORDER BY n_items DESC, status
