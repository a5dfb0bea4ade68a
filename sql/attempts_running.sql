-- Attempts still marked running, with the process that registered them: under the run lock, all abandoned.
SELECT run_id, attempt, host, pid FROM run_attempts WHERE status = 'running' ORDER BY run_id, attempt
