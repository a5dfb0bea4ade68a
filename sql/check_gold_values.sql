-- The gold column against the class names: how many non-null values, how many of them name no class, and
-- the commonest $examples of those. Expects relations `gold` (one column `value`: the gold column alone, read
-- at validation without the embeddings) and `classes` (column `class_name`).
WITH counts AS (
    SELECT value, count(*) AS n FROM gold WHERE value IS NOT NULL GROUP BY value
),
outside AS (
    SELECT value, n FROM counts ANTI JOIN classes ON counts.value = classes.class_name
)
SELECT (SELECT coalesce(sum(n), 0) FROM counts) AS n_labelled,
       (SELECT coalesce(sum(n), 0) FROM outside) AS n_outside,
       (SELECT list(value ORDER BY n DESC, value)[1:$examples] FROM outside) AS outside_examples
