-- In the commit transaction of a re-run of a run id that had succeeded: its label_changes rows so far compare
-- with the catalog the earlier attempt left; composed with that attempt's rows (`earlier`), they say what
-- changed since before the run, as a first attempt's do. An item the earlier attempt added and this one
-- removes, or relabelled and this one labels back (both levels), has no row. An item this attempt labelled as
-- the earlier one had (so without a row of its own) takes this attempt's confidence, the catalog's from now on.
CREATE OR REPLACE TEMP TABLE composed AS
SELECT $run_id AS run_id, coalesce(e.item_id, n.item_id) AS item_id,
       CASE WHEN e.item_id IS NULL THEN n.change WHEN n.item_id IS NULL THEN e.change
            WHEN e.change = 'new' THEN 'new' WHEN n.change = 'deleted' THEN 'deleted' ELSE 'relabelled' END AS change,
       CASE WHEN e.item_id IS NULL THEN n.old_label ELSE e.old_label END AS old_label,
       CASE WHEN n.item_id IS NULL THEN e.new_label ELSE n.new_label END AS new_label,
       CASE WHEN e.item_id IS NULL THEN n.old_confidence ELSE e.old_confidence END AS old_confidence,
       CASE WHEN n.item_id IS NULL THEN coalesce(t.confidence, e.new_confidence) ELSE n.new_confidence END
           AS new_confidence,
       CASE WHEN e.item_id IS NULL THEN n.cause WHEN n.item_id IS NULL THEN e.cause
            WHEN e.change = 'deleted' THEN 'embedding_changed' WHEN n.change = 'deleted' THEN 'removed'
            ELSE e.cause END AS cause,
       CASE WHEN e.item_id IS NULL THEN n.old_parent_label ELSE e.old_parent_label END AS old_parent_label,
       CASE WHEN n.item_id IS NULL THEN e.new_parent_label ELSE n.new_parent_label END AS new_parent_label
FROM earlier AS e
FULL JOIN (SELECT * FROM label_changes WHERE run_id = $run_id) AS n ON n.item_id = e.item_id
LEFT JOIN touched AS t ON t.item_id = e.item_id
WHERE NOT (e.change IS NOT DISTINCT FROM 'new' AND n.change IS NOT DISTINCT FROM 'deleted')
  AND NOT (e.item_id IS NOT NULL AND n.item_id IS NOT NULL AND e.change <> 'new' AND n.change <> 'deleted'
           AND e.old_label IS NOT DISTINCT FROM n.new_label
           AND e.old_parent_label IS NOT DISTINCT FROM n.new_parent_label)
