-- In the commit transaction, after the model's folder was renamed into <db>.models/: the stored model's row.
INSERT INTO models (model_id, run_id, fitted_at, n_items, params, modalities, dims, n_classes, class_hash,
                    schema_version, content_hash, path)
VALUES ($model_id, $run_id, now(), $n_items, $params, $modalities, $dims, $n_classes, $class_hash,
        $schema_version, $content_hash, $path)
