-- Items whose given (gold) label the run's evidence speaks against, most likely mislabelled first.
-- Only runs with a gold column write rows, and only for items with some evidence (raw_score > 0).
-- raw_score: mean over the item's labelled modalities of [pairwise label <> given] + given_gap
-- (pairwise_core/review.py): first how many modalities' pairwise labels disagree, then how far the
-- given label trails in base cosine.
-- score (the rank order): raw_score standardized among the items given the same label, (raw - mean) / sd.
-- A class the prompts describe badly draws disagreement on most of its items, clean ones included;
-- measured against its own items, an item stands out only if its class's usual disagreement does not
-- explain it (bench/evaluate_review.py; cleanlab's per-class thresholds answer the same problem).
-- suggested_label: the pairwise label other than the given one that most modalities give (then the larger
-- margin); when every pairwise label is the given one, the base label that beats it by the widest gap.
-- agreeing_modalities: how many modalities' pairwise labels are the suggested one.
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
    raw_score           DOUBLE NOT NULL,
    agreeing_modalities INTEGER NOT NULL,
    evidence            STRUCT(
                            modality VARCHAR, base_label VARCHAR, base_margin REAL,
                            pairwise_label VARCHAR, pairwise_margin REAL, given_gap REAL, given_h2h REAL
                        )[] NOT NULL
)
