-- Items whose pairwise label changed since the previous succeeded run (same item and modality).
WITH this_run AS (
    SELECT started_at FROM runs WHERE run_id = $run_id
),
previous AS (
    SELECT run_id FROM runs
    WHERE status = 'succeeded' AND run_id <> $run_id AND started_at < (SELECT started_at FROM this_run)
    ORDER BY started_at DESC LIMIT 1
)
SELECT cur.item_id, cur.modality, prev.pairwise_class AS previous_class, cur.pairwise_class AS current_class,
       (SELECT run_id FROM previous) AS previous_run_id
FROM item_labels AS cur
JOIN item_labels AS prev ON prev.item_id = cur.item_id AND prev.modality = cur.modality
WHERE cur.run_id = $run_id
  AND prev.run_id = (SELECT run_id FROM previous)
  AND prev.pairwise_class <> cur.pairwise_class
ORDER BY cur.item_id, cur.modality
