-- Runs still marked running, with the process that owns them (details.owner).
SELECT run_id, details->>'$.owner.host' AS host, CAST(details->>'$.owner.pid' AS INTEGER) AS pid
FROM runs WHERE status = 'running'
