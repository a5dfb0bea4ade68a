UPDATE run_attempts SET status = 'failed', finished_at = now(), error = $error
WHERE run_id = $run_id AND attempt = $attempt
