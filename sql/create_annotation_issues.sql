-- Items whose given (gold) label the run's evidence speaks against, most likely mislabelled first.
-- Only runs with a gold column write rows, and only for items with some evidence (score > 0).
-- score: mean over the item's labelled modalities of given_gap + max(given_h2h, 0) (pairwise_core/review.py).
-- evidence, one struct per labelled modality:
--   given_gap  base cosine of the best class minus that of the given label (0 when the base label is the given one);
--   given_h2h  the pairwise label's normalized margin over the given label in their own match, (x . w) / |x * m|
--              on that pair's mask (0 when they are the same; negative when the given label wins that match).
CREATE TABLE IF NOT EXISTS annotation_issues (
    run_id              VARCHAR NOT NULL,
    rank                INTEGER NOT NULL,
    item_id             VARCHAR NOT NULL,
    given_label         VARCHAR NOT NULL,
    suggested_label     VARCHAR NOT NULL,
    score               DOUBLE NOT NULL,
    agreeing_modalities INTEGER NOT NULL,
    evidence            STRUCT(
                            modality VARCHAR, base_label VARCHAR, base_margin REAL,
                            pairwise_label VARCHAR, pairwise_margin REAL, given_gap REAL, given_h2h REAL
                        )[] NOT NULL
)
