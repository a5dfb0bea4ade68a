SELECT * FROM agreement_metrics WHERE run_id = $run_id
