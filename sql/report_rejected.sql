-- The run's rejected rows (rejected_items) by modality and reason, and on every row how many items got no
-- label at all: every modality rejected, so no joint_labels row (catalog_labels shows them as 'rejected').
SELECT modality, reason, count(*) AS n_rows,
       (SELECT count(DISTINCT r.item_id) FROM rejected_items r
        WHERE r.run_id = $run_id
          AND NOT EXISTS (SELECT 1 FROM joint_labels j WHERE j.run_id = $run_id AND j.item_id = r.item_id)
       ) AS n_unlabelled
FROM rejected_items
WHERE run_id = $run_id
GROUP BY modality, reason
ORDER BY n_rows DESC, modality, reason
