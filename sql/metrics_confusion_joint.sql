-- Confusion counts of one partition's joint labels against gold (method 'refined', modality_a 'joint').
-- Expects a relation `joint` with the columns of joint_labels.
SELECT 'refined' AS method, 'joint' AS modality_a, 'gold' AS modality_b, label AS pred, gold_class AS ref,
       count(*) AS n
FROM joint
WHERE gold_class IS NOT NULL AND label IS NOT NULL
GROUP BY ALL
