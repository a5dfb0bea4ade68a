DELETE FROM annotation_issues WHERE run_id = $run_id
