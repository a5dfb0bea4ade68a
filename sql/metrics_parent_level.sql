-- One partition's labels at the parent level, as relations `labels` and `joint` with the leaf level's
-- columns, so that the same metrics SQL counts both levels. Expects `leaf_labels` and `leaf_joint` (the
-- partition's item_labels and joint_labels) and `parents` (class_name, parent).
-- base and pairwise: the parent of the leaf label. refined and joint: the parent with the largest summed
-- probability (parent_class, parent_label) and that sum as the confidence. Gold: the parent of the gold class;
-- a gold value that names no class is kept as it is (wrong, as at the leaf level, unless it names a parent).
CREATE OR REPLACE TEMP VIEW labels AS
SELECT l.item_id, l.modality, b.parent AS base_class, p.parent AS pairwise_class, l.parent_class AS refined_class,
       l.parent_confidence AS refined_confidence, coalesce(g.parent, l.gold_class) AS gold_class
FROM leaf_labels AS l
JOIN parents AS b ON b.class_name = l.base_class
JOIN parents AS p ON p.class_name = l.pairwise_class
LEFT JOIN parents AS g ON g.class_name = l.gold_class;

CREATE OR REPLACE TEMP VIEW joint AS
SELECT j.item_id, j.parent_label AS label, j.parent_confidence AS confidence,
       coalesce(g.parent, j.gold_class) AS gold_class
FROM leaf_joint AS j
LEFT JOIN parents AS g ON g.class_name = j.gold_class;
