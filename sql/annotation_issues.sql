-- A run's annotation issues, most likely mislabelled first, from the relation `review_items` (the verdicts the
-- label pass staged, tasks/label.py); the caller numbers the rows as it streams them. Every item with a known
-- given label is ranked: an analyst reads from the top, or filters by p_given.
SELECT $run_id AS run_id, item_id, given_label, suggested_label, p_given, p_given_parent, route,
       zero_shot_p_given, zero_shot_label, label_aware_p_given, label_aware_label, agreeing_modalities
FROM review_items
ORDER BY p_given, item_id
