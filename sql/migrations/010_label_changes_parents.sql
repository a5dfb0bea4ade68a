-- Schema version 10: label_changes follows the parent level and names two more causes.
-- old_parent_label, new_parent_label  the item's parent label before and after (NULL without parents, and in
--                                     rows written before this version); a row is written when the parent
--                                     label appears, changes or goes away too, with the leaf label unchanged
-- cause 'parents'     the same embeddings and model, under other class parents (a relabel with a new taxonomy)
-- cause 'neighbours'  the same embeddings, model and parents: the graph refinement (--graph-k) moved the label,
--                     the item's neighbours in the catalog or the run's --graph-k being others. Such rows said
--                     'embedding_changed' before, which they were not.
-- DuckDB cannot change a CHECK constraint in place: the table is rebuilt with its rows.
CREATE TABLE label_changes_v10 (
    run_id           VARCHAR NOT NULL,
    item_id          VARCHAR NOT NULL,
    change           VARCHAR NOT NULL CHECK (change IN ('new', 'relabelled', 'deleted')),
    old_label        VARCHAR,
    new_label        VARCHAR,
    old_confidence   REAL,
    new_confidence   REAL,
    cause            VARCHAR NOT NULL
                     CHECK (cause IN ('new_item', 'embedding_changed', 'refit', 'parents', 'neighbours', 'removed')),
    old_parent_label VARCHAR,
    new_parent_label VARCHAR
);
INSERT INTO label_changes_v10 BY NAME SELECT * FROM label_changes;
DROP TABLE label_changes;
ALTER TABLE label_changes_v10 RENAME TO label_changes;
