-- The gold column against the class names: how many values (a blank one, empty or whitespace, Unicode's
-- included, is no label, as a null), how many of them name no class, the commonest $examples of those, and the classes no value names.
-- Expects relations `gold` (one column `value`: the gold column alone, read at validation without the
-- embeddings) and `classes` (column `class_name`).
WITH counts AS (
    SELECT value, count(*) AS n FROM gold WHERE NOT regexp_full_match(value, '[\s\v\x{85}\p{Z}]*') GROUP BY value
),
outside AS (
    SELECT value, n FROM counts ANTI JOIN classes ON counts.value = classes.class_name
)
SELECT (SELECT coalesce(sum(n), 0) FROM counts) AS n_labelled,
       (SELECT coalesce(sum(n), 0) FROM outside) AS n_outside,
       (SELECT list(value ORDER BY n DESC, value)[1:$examples] FROM outside) AS outside_examples,
       (SELECT list(class_name ORDER BY class_name) FROM classes ANTI JOIN counts ON counts.value = classes.class_name)
           AS unnamed_classes
