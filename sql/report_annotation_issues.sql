-- The run's most likely mislabelled items, best first, at most $limit, with how many the run found in all.
-- Runs of schema version 4 on fill p_given and each route's evidence; older runs fill score and evidence.
SELECT rank, item_id, given_label, suggested_label, p_given, p_given_parent, route,
       zero_shot_p_given, zero_shot_label, label_aware_p_given, label_aware_label, agreeing_modalities,
       neighbours_p_given, neighbours_label, score, evidence,
       count(*) OVER () AS n_issues
FROM annotation_issues
WHERE run_id = $run_id
ORDER BY rank
LIMIT $limit
