-- The stored models, newest first (`pairwise models`), with how many live catalog items each one labelled last.
SELECT m.model_id, m.run_id, m.fitted_at, m.n_items, m.n_classes, m.modalities, m.content_hash,
       (SELECT count(*) FROM catalog_items AS c WHERE c.model_id = m.model_id AND c.deleted_by IS NULL) AS n_live
FROM models AS m
ORDER BY m.fitted_at DESC, m.model_id DESC
