-- A run's annotation issues, most likely mislabelled first, from relations `review_items` (the verdicts the
-- label pass staged, pairwise_core/review.py) and `spread` (sql/review_class_spread.sql); the caller numbers
-- the rows as it streams them.
-- Items with no evidence against their given label (raw_score 0) are left out.
SELECT $run_id AS run_id, r.item_id, r.given_label, r.suggested_label,
       coalesce((r.raw_score - s.mean_raw) / nullif(s.sd_raw, 0), 0) AS score,
       r.raw_score, r.agreeing_modalities, r.evidence
FROM review_items AS r JOIN spread AS s USING (given_label)
WHERE r.raw_score > 0
ORDER BY score DESC, r.item_id
