-- Per class of the joint label, over its items with a gold label: how many, their mean confidence, the share right
-- against gold, and the gold classes its wrong labels commonly belong to (at most 3, commonest first: where the
-- class draws its items from). A class whose labels are far more confident than right (one that draws other
-- classes' items, as with many classes or one modality) lets errors through any confidence threshold; the reports
-- name such classes (tasks/report.py, class_reliability). No rows without a gold column.
WITH labelled AS (
    SELECT label, gold_class, confidence
    FROM joint_labels
    WHERE run_id = $run_id AND confidence IS NOT NULL AND label IS NOT NULL AND gold_class IS NOT NULL
),
wrong AS (
    SELECT label, gold_class, count(*) AS n FROM labelled WHERE gold_class <> label GROUP BY label, gold_class
),
commonest AS (
    SELECT label, list(struct_pack(gold_class := gold_class, n := n) ORDER BY n DESC, gold_class)[1:3] AS wrong_gold
    FROM wrong GROUP BY label
)
SELECT l.label AS class, count(*) AS n_gold, avg(l.confidence) AS mean_confidence,
       avg(CAST(l.label = l.gold_class AS INTEGER)) AS gold_accuracy, any_value(c.wrong_gold) AS wrong_gold
FROM labelled AS l LEFT JOIN commonest AS c USING (label)
GROUP BY l.label
