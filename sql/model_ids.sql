-- Every stored model's id: a folder of <db>.models/ without one is what a failed commit left.
SELECT model_id FROM models
