SELECT * FROM rejected_items WHERE run_id = $run_id
