DELETE FROM confusion_counts WHERE run_id = $run_id
