-- A run's annotation_issues rows, from its staged item_labels (a relation `labels`); rules in
-- sql/create_annotation_issues.sql. Items with no evidence against their given label (raw_score 0) are left out.
WITH reviewed AS (
    SELECT * FROM labels WHERE gold_class IS NOT NULL AND given_gap IS NOT NULL
),
evidence AS (
    SELECT item_id, gold_class AS given_label,
           avg(CAST(pairwise_class <> gold_class AS DOUBLE) + given_gap) AS raw_score,
           list({
               'modality': modality, 'base_label': base_class, 'base_margin': base_margin,
               'pairwise_label': pairwise_class, 'pairwise_margin': pairwise_margin,
               'given_gap': given_gap, 'given_h2h': given_h2h
           } ORDER BY modality) AS evidence
    FROM reviewed
    GROUP BY item_id, gold_class
),
scored AS (  -- standardized within the given class, over all its reviewed items
    SELECT *,
           coalesce((raw_score - avg(raw_score) OVER by_class) / nullif(stddev_pop(raw_score) OVER by_class, 0), 0)
               AS score
    FROM evidence
    WINDOW by_class AS (PARTITION BY given_label)
),
alternatives AS (
    SELECT item_id, pairwise_class AS label, 1 AS from_pairwise, count(*) AS votes, max(pairwise_margin) AS strength
    FROM reviewed WHERE pairwise_class <> gold_class
    GROUP BY item_id, pairwise_class
    UNION ALL
    SELECT item_id, base_class AS label, 0 AS from_pairwise, 0 AS votes, max(given_gap) AS strength
    FROM reviewed WHERE base_class <> gold_class
    GROUP BY item_id, base_class
),
suggested AS (
    SELECT item_id, label, votes
    FROM alternatives
    QUALIFY row_number() OVER (
        PARTITION BY item_id ORDER BY from_pairwise DESC, votes DESC, strength DESC NULLS LAST, label
    ) = 1
)
SELECT $run_id AS run_id,
       CAST(row_number() OVER (ORDER BY s.score DESC, s.item_id) AS INTEGER) AS rank,
       s.item_id, s.given_label, g.label AS suggested_label, s.score, s.raw_score,
       CAST(g.votes AS INTEGER) AS agreeing_modalities, s.evidence
FROM scored AS s JOIN suggested AS g USING (item_id)
WHERE s.raw_score > 0
ORDER BY rank
