DELETE FROM drift_metrics WHERE run_id = $run_id
