DELETE FROM calibration_bins WHERE run_id = $run_id
