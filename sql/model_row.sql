-- A stored model's row, by its id or 'latest' (the newest fitted).
SELECT * FROM models
WHERE model_id = $model_id
   OR ($model_id = 'latest' AND model_id = (SELECT model_id FROM models ORDER BY fitted_at DESC, model_id DESC LIMIT 1))
