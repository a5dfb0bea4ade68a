-- Items whose pairwise label changed since they were last labelled (same item and modality): each against the
-- latest earlier succeeded run that labelled it, so that an incremental night, which labels a few items, is
-- compared item by item and not with a night that labelled others.
WITH this_run AS (
    SELECT started_at FROM runs WHERE run_id = $run_id
),
cur AS (
    SELECT item_id, modality, pairwise_class FROM item_labels WHERE run_id = $run_id
),
previous AS (
    SELECT l.item_id, l.modality, l.pairwise_class, l.run_id
    FROM item_labels AS l
    JOIN runs AS r ON r.run_id = l.run_id
    SEMI JOIN cur ON cur.item_id = l.item_id AND cur.modality = l.modality
    WHERE r.status = 'succeeded' AND r.run_id <> $run_id AND r.started_at < (SELECT started_at FROM this_run)
    QUALIFY row_number() OVER (PARTITION BY l.item_id, l.modality ORDER BY r.started_at DESC) = 1
)
SELECT cur.item_id, cur.modality, prev.pairwise_class AS previous_class, cur.pairwise_class AS current_class,
       prev.run_id AS previous_run_id
FROM cur
JOIN previous AS prev ON prev.item_id = cur.item_id AND prev.modality = cur.modality
WHERE prev.pairwise_class <> cur.pairwise_class
ORDER BY cur.item_id, cur.modality
