-- Schema version 4: the label-error finder (METHOD.md step 9) ranks by p_given, the probability that the
-- given label is right, from two routes of evidence.

-- Files of the first label review (before 2cdb3ef) have no raw_score: 001's CREATE TABLE IF NOT EXISTS left
-- their annotation_issues as it was. This line came after the release, against the rule of 001: the
-- statement after it failed on exactly those files, so no file recorded version 4 without it, and on every
-- other file it changes nothing. The column comes last on them (statements name their columns).
ALTER TABLE annotation_issues ADD COLUMN IF NOT EXISTS raw_score DOUBLE;

-- Runs made before it keep their rows: their score, raw_score and evidence stay, and the new columns are
-- NULL for them. New runs leave the old columns NULL.
ALTER TABLE annotation_issues ALTER COLUMN score DROP NOT NULL;
ALTER TABLE annotation_issues ALTER COLUMN raw_score DROP NOT NULL;
ALTER TABLE annotation_issues ALTER COLUMN evidence DROP NOT NULL;
-- p_given              the probability that the given label is right, by the run's route; rank orders by it
-- route                'zero-shot', 'label-aware' or 'both' (runs.details.review says how it was fitted)
-- zero_shot_p_given    the given label's probability under the refined joint posterior with label-free
--                      weights: it never reads the labels
-- zero_shot_label      that posterior's most likely class
-- label_aware_p_given  the given label's probability under the out-of-fold discriminant on the given labels
--                      (NULL when the route is zero-shot)
-- label_aware_label    that discriminant's most likely class
ALTER TABLE annotation_issues ADD COLUMN p_given DOUBLE;
ALTER TABLE annotation_issues ADD COLUMN route VARCHAR;
ALTER TABLE annotation_issues ADD COLUMN zero_shot_p_given DOUBLE;
ALTER TABLE annotation_issues ADD COLUMN zero_shot_label VARCHAR;
ALTER TABLE annotation_issues ADD COLUMN label_aware_p_given DOUBLE;
ALTER TABLE annotation_issues ADD COLUMN label_aware_label VARCHAR;
