-- Attempts still marked running, with the process that owns them.
SELECT run_id, attempt, host, pid FROM run_attempts WHERE status = 'running'
