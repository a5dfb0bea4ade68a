SELECT * FROM item_labels WHERE run_id = $run_id
