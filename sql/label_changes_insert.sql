-- In the commit transaction, before catalog_items changes: the run's label_changes rows, from the items it
-- labelled (`touched`) and the ones gone (`gone`) against the catalog's state: a row where the label or the
-- parent label appeared, changed or went away. Its cause: a changed input (fingerprint or --changed-column
-- value) when there is one, else the new model, else other class parents than the run that labelled the item
-- had ($parents, as runs.details.parents records them), else the graph refinement (with the same input, model
-- and parents only it moves a label: the item's neighbours, or the run's --graph-k, differ). A version
-- recorded by no run (one without --changed-column labelled the item) is not known to have changed; nor is a
-- fingerprint taken over other modalities (the run that recorded it, `r`, read other embedding columns, or in
-- another order).
-- An item that had no label (new, or every modality rejected) and gets one is 'new'; one whose every modality
-- is now rejected loses its label: 'deleted', by its cause. One gone from the source is 'deleted' if it had a
-- label: one that never had (rejected in every modality) leaves no label behind, and a sync never had its row.
INSERT INTO label_changes BY NAME
SELECT $run_id AS run_id, t.item_id,
       CASE WHEN c.label IS NULL THEN 'new' WHEN t.label IS NULL THEN 'deleted' ELSE 'relabelled' END AS change,
       c.label AS old_label, t.label AS new_label, c.confidence AS old_confidence, t.confidence AS new_confidence,
       CASE WHEN c.item_id IS NULL THEN 'new_item'
            WHEN (c.fingerprint <> t.fingerprint AND (r.modalities IS NULL OR r.modalities = $modalities))
                 OR (t.version IS NOT NULL AND c.version IS NOT NULL AND c.version <> t.version) THEN 'embedding_changed'
            WHEN c.model_id IS DISTINCT FROM $model_id THEN 'refit'
            WHEN json_exists(r.details, '$.parents') AND json(r.details -> '$.parents') <> json($parents) THEN 'parents'
            ELSE 'neighbours' END AS cause,
       c.parent_label AS old_parent_label, t.parent_label AS new_parent_label
FROM touched AS t
LEFT JOIN catalog_items AS c ON c.item_id = t.item_id AND c.deleted_by IS NULL
LEFT JOIN runs AS r ON r.run_id = c.run_id
WHERE (c.item_id IS NULL AND t.label IS NOT NULL)
   OR (c.item_id IS NOT NULL AND (t.label IS DISTINCT FROM c.label OR t.parent_label IS DISTINCT FROM c.parent_label))
UNION ALL BY NAME
SELECT $run_id AS run_id, c.item_id, 'deleted' AS change, c.label AS old_label, NULL AS new_label,
       c.confidence AS old_confidence, NULL AS new_confidence, 'removed' AS cause,
       c.parent_label AS old_parent_label, NULL AS new_parent_label
FROM catalog_items AS c
SEMI JOIN gone AS g ON g.item_id = c.item_id
WHERE c.deleted_by IS NULL AND c.label IS NOT NULL
