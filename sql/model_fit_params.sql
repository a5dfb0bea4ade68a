-- The parameters of the run that fitted a stored model: none if that run id's row is now another attempt's
-- (a re-run, which stores a model of its own).
SELECT r.params FROM models m JOIN runs r ON r.run_id = m.run_id AND r.model_id = m.model_id
WHERE m.model_id = $model_id
