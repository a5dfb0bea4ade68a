SELECT * FROM pair_masks WHERE run_id = $run_id
