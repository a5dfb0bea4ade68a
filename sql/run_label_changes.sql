-- A run's label_changes counted by change and cause (the run's log and report).
SELECT change, cause, count(*) AS n
FROM label_changes
WHERE run_id = $run_id
GROUP BY ALL
ORDER BY change, cause
