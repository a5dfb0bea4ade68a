-- The run's most likely mislabelled items, best first, at most $limit, with how many the run found in all.
SELECT rank, item_id, given_label, suggested_label, score, agreeing_modalities, evidence,
       count(*) OVER () AS n_issues
FROM annotation_issues
WHERE run_id = $run_id
ORDER BY rank
LIMIT $limit
