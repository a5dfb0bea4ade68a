-- One label per run and item, from its modalities' pairwise labels: what downstream systems consume.
-- Every succeeded run, and succeeded runs only (current_labels is the latest one alone): a run's rows are
-- loaded by the transaction that marks it succeeded, and a re-run that fails leaves rows and status alone.
-- The filter hides the rows that code before schema version 2 left under a run id whose re-run then failed
-- or was killed (that code marked the id running, then failed, and kept its rows).
-- status:
--   agreed           every labelled modality (at least two) gives the same label;
--   single_modality  only one modality labelled the item (the others were rejected);
--   majority         more modalities give this label than any other;
--   by_margin        a tie in votes, broken by the larger normalized pairwise margin, (x . w) / |x * m|:
--                    a difference of masked cosines in every modality, so margins compare across them;
--   undecided        a tie in votes and in margin; label and confidence are NULL.
-- confidence: the smallest margin among the modalities giving the label (agreed, majority,
-- single_modality), or the winning margin minus the best margin for another label (by_margin).
-- agreeing_modalities: how many modalities give the label (for undecided, the tied count).
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW consensus_labels AS
WITH votes AS (
    SELECT run_id, item_id, pairwise_class AS label, count(*) AS votes,
           max(pairwise_margin) AS top_margin, min(pairwise_margin) AS low_margin
    FROM item_labels
    WHERE run_id NOT IN (SELECT run_id FROM runs WHERE status <> 'succeeded')
    GROUP BY run_id, item_id, pairwise_class
),
ranked AS (
    SELECT *,
           row_number() OVER by_strength AS place,
           count(*) OVER item AS n_labels,
           sum(votes) OVER item AS n_modalities,
           lead(votes) OVER by_strength AS next_votes,
           lead(top_margin) OVER by_strength AS next_margin
    FROM votes
    WINDOW item AS (PARTITION BY run_id, item_id),
           by_strength AS (PARTITION BY run_id, item_id ORDER BY votes DESC, top_margin DESC NULLS LAST, label)
),
decided AS (
    SELECT *,
           CASE
               WHEN n_labels = 1 AND n_modalities > 1 THEN 'agreed'
               WHEN n_labels = 1 THEN 'single_modality'
               WHEN votes > next_votes THEN 'majority'
               WHEN top_margin > next_margin THEN 'by_margin'
               ELSE 'undecided'
           END AS status
    FROM ranked
    WHERE place = 1
)
SELECT run_id, item_id,
       CASE WHEN status = 'undecided' THEN NULL ELSE label END AS label,
       CASE status
           WHEN 'by_margin' THEN top_margin - next_margin
           WHEN 'undecided' THEN NULL
           ELSE low_margin
       END AS confidence,
       CAST(votes AS INTEGER) AS agreeing_modalities,
       status
FROM decided
