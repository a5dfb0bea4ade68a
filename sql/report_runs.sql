-- Every run, newest first (`pairwise runs`, tasks/run_retention.py), with what still reads it:
-- n_live  the live items it last labelled (catalog_items.run_id): current_labels joins its item_labels rows;
-- fitted  the stored model it fitted, if any: labelling with that model reads its params (model_fit_params.sql).
SELECT r.run_id, r.status, r.started_at, r.finished_at, r.n_items, r.model_id,
       (SELECT count(*) FROM catalog_items AS c WHERE c.run_id = r.run_id AND c.deleted_by IS NULL) AS n_live,
       (SELECT min(m.model_id) FROM models AS m WHERE m.run_id = r.run_id) AS fitted
FROM runs AS r
ORDER BY r.started_at DESC, r.run_id DESC
