DELETE FROM label_changes WHERE run_id = $run_id
