-- item_ids that occur more than once in a modality of a run's staged rows (labels and rejections alike).
-- Expects a relation `staged` with columns item_id and modality. A run with any of them fails: counting an
-- item twice would skew every metric.
SELECT item_id, max(n) AS n
FROM (SELECT item_id, modality, count(*) AS n FROM staged GROUP BY item_id, modality HAVING count(*) > 1)
GROUP BY item_id
ORDER BY item_id
LIMIT 5
