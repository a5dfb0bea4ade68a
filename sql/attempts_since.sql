-- The run attempts registered since a moment (a command's start), oldest first, with how each ended.
SELECT run_id, status FROM run_attempts WHERE started_at >= $since ORDER BY started_at, attempt
