-- A run's annotation issues, most likely mislabelled first, from the relation `review_items` (the verdicts the
-- label pass staged, tasks/label.py); the caller numbers the rows as it streams them. The staged items are those
-- whose p_given is below --issues-below (review_table; at 1 every item with a known given label): an analyst
-- reads from the top, or filters by p_given. With a parent level the order
-- weighs a wrong parent in: p_given^(1 - w) * p_given_parent^w ascending, w = $parent_weight (a given label
-- whose parent is wrong is the worse error); without one (p_given_parent NULL) it is p_given's order.
SELECT $run_id AS run_id, item_id, given_label, suggested_label, p_given, p_given_parent, route,
       zero_shot_p_given, zero_shot_label, label_aware_p_given, label_aware_label, agreeing_modalities,
       neighbours_p_given, neighbours_label
FROM review_items
ORDER BY pow(p_given, 1 - $parent_weight) * pow(coalesce(p_given_parent, p_given), $parent_weight), p_given, item_id
