SELECT * FROM joint_labels WHERE run_id = $run_id
