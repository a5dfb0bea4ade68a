-- Schema version 7: a parent level (issue 22). A classes table may give each class a parent; a parent's
-- probability is the sum of its children's in the same posterior as the leaf label. NULL for runs whose
-- classes have no parents, and for runs made before this version.

-- Per item and modality: the parent with the largest summed probability in the modality's refined posterior.
ALTER TABLE item_labels ADD COLUMN parent_class VARCHAR;
ALTER TABLE item_labels ADD COLUMN parent_confidence REAL;

-- Per item: the same from its joint posterior (consensus_labels shows them).
ALTER TABLE joint_labels ADD COLUMN parent_label VARCHAR;
ALTER TABLE joint_labels ADD COLUMN parent_confidence REAL;

-- The catalog's state carries the joint parent too (catalog_labels shows it).
ALTER TABLE catalog_items ADD COLUMN parent_label VARCHAR;
ALTER TABLE catalog_items ADD COLUMN parent_confidence REAL;

-- agreement_metrics.method may now be 'base_parent', 'pairwise_parent' or 'refined_parent': the metrics at
-- the parent level. DuckDB cannot change a CHECK constraint in place: the table is rebuilt with its rows.
CREATE TABLE agreement_metrics_v7 (
    run_id     VARCHAR NOT NULL,
    method     VARCHAR NOT NULL CHECK (method IN ('base', 'pairwise', 'refined', 'base_parent', 'pairwise_parent',
                                                  'refined_parent')),
    metric     VARCHAR NOT NULL,
    modality_a VARCHAR NOT NULL,
    modality_b VARCHAR NOT NULL,
    value      DOUBLE
);
INSERT INTO agreement_metrics_v7 SELECT * FROM agreement_metrics;
DROP TABLE agreement_metrics;
ALTER TABLE agreement_metrics_v7 RENAME TO agreement_metrics;
