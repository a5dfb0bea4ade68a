UPDATE run_attempts SET status = 'succeeded', finished_at = now(), error = NULL
WHERE run_id = $run_id AND attempt = $attempt
