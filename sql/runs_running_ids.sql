SELECT run_id FROM runs WHERE status = 'running'
