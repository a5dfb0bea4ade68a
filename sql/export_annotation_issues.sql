SELECT * FROM annotation_issues WHERE run_id = $run_id ORDER BY rank
