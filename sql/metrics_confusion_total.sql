-- A run's confusion_counts rows: the per-partition counts (a relation `confusion`) added up.
SELECT $run_id AS run_id, method, modality_a, modality_b, pred, ref, sum(n)::BIGINT AS n
FROM confusion
GROUP BY ALL
ORDER BY ALL
