"""Review of the given labels: the evidence in the core, the annotation_issues and consensus_labels rules in SQL,
and the flow's table on a catalog with known flipped labels."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import PairwiseClassifier, make_catalog
from pairwise_core.review import review_items
from tasks import store
from tasks.label import REVIEW_SCHEMA
from tasks.review import rank_annotation_issues
from tests.conftest import write_catalog
from tests.reference import masked_cosine, noisy_catalog, unit_rows


@st.composite
def reviews(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, d, n = draw(st.integers(1, 7)), draw(st.integers(2, 10)), draw(st.integers(1, 40))
    x, classes = noisy_catalog(rng, k, d, n)
    candidates = draw(st.sampled_from([None, 2, 3]))
    return x, classes, rng.integers(-1, k, n), candidates


@given(reviews())
def test_evidence_against_the_given_label_matches_a_per_item_reference(review):
    x, classes, given_labels, candidates = review
    clf = PairwiseClassifier(classes, min_dims=2, candidates=candidates).fit(x)
    result = clf.classify(x, given=given_labels)
    unit, cosines = unit_rows(classes), unit_rows(x) @ unit_rows(classes).T
    met = {(a, b) for a, b in clf.pairs_} if clf.candidates is not None and clf.candidates < len(classes) else None
    for i, (row, g, label) in enumerate(zip(x, given_labels, result.label, strict=True)):
        if g < 0:
            assert np.isnan(result.given_gap[i]) and np.isnan(result.given_h2h[i])
            continue
        assert result.given_gap[i] == pytest.approx(cosines[i].max() - cosines[i, g], abs=1e-6)
        if label == g:
            assert result.given_h2h[i] == 0
            continue
        pair = (min(label, g), max(label, g))
        mask = clf.masks_[label, g] if met is None or pair in met else np.ones(classes.shape[1])
        expected = masked_cosine(row, unit[label], mask) - masked_cosine(row, unit[g], mask)
        assert result.given_h2h[i] == pytest.approx(expected, abs=1e-6)


def test_given_labels_are_checked():
    rng = np.random.default_rng(0)
    x, classes = noisy_catalog(rng, 3, 5, 10)
    clf = PairwiseClassifier(classes, min_dims=2).fit(x)
    with pytest.raises(ValueError, match="class indices outside"):
        clf.classify(x, given=np.full(10, 3))
    with pytest.raises(ValueError, match="given must be 10 class indices"):
        clf.classify(x, given=np.zeros(9, dtype=int))


# -- the review rules, on hand-made labels ---------------------------------------------------------------------

LABELS = [  # item, modality, base, pairwise, pairwise margin, gold, given_gap, given_h2h
    ("agree", "image", "a", "a", 0.30, "a", 0.0, 0.0),
    ("agree", "text", "a", "a", 0.20, "a", 0.0, 0.0),
    ("tie", "image", "b", "b", 0.40, "a", 0.2, 0.3),
    ("tie", "text", "a", "c", 0.10, "a", 0.0, 0.1),
    ("even", "image", "b", "b", 0.25, "c", 0.1, 0.2),
    ("even", "text", "c", "a", 0.25, "c", 0.0, 0.05),
    ("wrong", "image", "b", "b", 0.50, "a", 0.6, 0.4),
    ("wrong", "text", "b", "b", 0.40, "a", 0.5, 0.3),
    ("alone", "image", "c", "a", 0.15, "a", 0.05, 0.0),
]
ITEMS, CLASSES = ["agree", "tie", "even", "wrong", "alone"], ["a", "b", "c"]


def evidence_arrays():
    """LABELS as the label pass holds them: (items, modalities) arrays, class indices."""
    shape = (len(ITEMS), 2)
    base, label = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    margin, gap, reviewed = np.full(shape, np.nan), np.full(shape, np.nan), np.zeros(shape, bool)
    given = np.zeros(len(ITEMS), np.int64)
    for item, modality, b, p, m, g, gp, _ in LABELS:
        i, j = ITEMS.index(item), ["image", "text"].index(modality)
        base[i, j], label[i, j], margin[i, j], gap[i, j] = CLASSES.index(b), CLASSES.index(p), m, gp
        reviewed[i, j], given[i] = True, CLASSES.index(g)
    return given, base, label, margin, gap, reviewed


def test_review_rules_by_hand():
    verdict = review_items(*evidence_arrays())
    got = {item: (round(raw, 3), CLASSES[s] if s >= 0 else None, int(n))
           for item, raw, s, n in zip(ITEMS, verdict.raw_score, verdict.suggested, verdict.agreeing, strict=True)}
    assert got == {
        "agree": (0.0, None, 0),  # nothing against its label
        "tie": (1.1, "b", 1),  # mean(1 + 0.2, 1 + 0.0); b and c tie in votes, b has the larger margin
        "even": (1.05, "a", 1),  # mean(1 + 0.1, 1 + 0.0); a and b tie in votes and margin: the first class
        "wrong": (1.55, "b", 2),  # both modalities say b, far from a: mean(1 + 0.6, 1 + 0.5)
        "alone": (0.05, "c", 0),  # only the base label disagrees: it is the suggestion
    }


@st.composite
def verdicts(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, m, k = draw(st.integers(1, 30)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    reviewed = rng.random((n, m)) < 0.8
    margin = np.round(rng.random((n, m)), 1)  # coarse, so that ties happen
    margin[rng.random((n, m)) < 0.1] = np.nan
    gap = np.round(rng.random((n, m)), 1) * (rng.random((n, m)) < 0.5)
    return (rng.integers(0, k, n), rng.integers(0, k, (n, m)), rng.integers(0, k, (n, m)), margin,
            np.where(reviewed, gap, np.nan), reviewed)


@given(verdicts())
def test_review_rules_match_a_per_item_reading_of_the_docstring(case):
    given_labels, base, label, margin, gap, reviewed = case
    verdict = review_items(given_labels, base, label, margin, gap, reviewed)
    for i, g in enumerate(given_labels):
        mods = np.flatnonzero(reviewed[i])
        if not mods.size:
            assert np.isnan(verdict.raw_score[i])
            continue
        assert verdict.raw_score[i] == pytest.approx(np.mean([(label[i, j] != g) + gap[i, j] for j in mods]))
        strength = lambda c, values: max((values[i, j] for j in mods if label[i, j] == c and not np.isnan(values[i, j])),
                                         default=-np.inf)
        others = {label[i, j] for j in mods if label[i, j] != g}
        if others:
            votes = {c: sum(label[i, j] == c for j in mods) for c in others}
            best = min(others, key=lambda c: (-votes[c], -strength(c, margin), c))
            assert (verdict.suggested[i], verdict.agreeing[i]) == (best, votes[best])
            continue
        base_others = {base[i, j] for j in mods if base[i, j] != g}
        gap_of = lambda c: max(gap[i, j] for j in mods if base[i, j] == c)
        expected = min(base_others, key=lambda c: (-gap_of(c), c)) if base_others else -1
        assert (verdict.suggested[i], verdict.agreeing[i]) == (expected, 0)


def test_annotation_issues_are_standardized_within_the_given_label(tmp_path):
    given, base, label, margin, gap, reviewed = evidence_arrays()
    verdict = review_items(given, base, label, margin, gap, reviewed)
    part = tmp_path / "review.parquet"
    pq.write_table(pa.table({
        "item_id": ITEMS, "given_label": [CLASSES[g] for g in given],
        "suggested_label": [CLASSES[s] if s >= 0 else None for s in verdict.suggested],
        "raw_score": verdict.raw_score, "agreeing_modalities": verdict.agreeing.astype(np.int32),
        "evidence": pa.nulls(len(ITEMS), REVIEW_SCHEMA.field("evidence").type),
    }, schema=REVIEW_SCHEMA), part)
    files = rank_annotation_issues([str(part)], tmp_path / "w", "r")
    got = pq.read_table(files[0]).to_pylist()
    assert [(row["rank"], row["item_id"], row["suggested_label"]) for row in got] == [
        (1, "wrong", "b"), (2, "tie", "b"), (3, "even", "a"), (4, "alone", "c"),
    ]  # "agree" has no evidence against it and is left out
    # score: raw_score standardized among the items given the same label ("agree" included);
    # "even" is alone in class c, so its score is 0
    given_a = np.array([0.0, 1.1, 1.55, 0.05])  # agree, tie, wrong, alone
    z = (given_a - given_a.mean()) / given_a.std()
    assert {row["item_id"]: row["score"] for row in got} == pytest.approx(
        {"wrong": z[2], "tie": z[1], "even": 0.0, "alone": z[3]})


def test_no_issue_no_file(tmp_path):
    part = tmp_path / "review.parquet"
    pq.write_table(REVIEW_SCHEMA.empty_table(), part)
    assert rank_annotation_issues([str(part)], tmp_path / "w", "r") == []


def test_runs_before_the_joint_label_keep_their_vote_rule_after_the_upgrade(tmp_path):
    from test_schema import V0_TABLES  # the tables as the code before schema versions wrote them

    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(V0_TABLES)
        con.execute("INSERT INTO runs VALUES ('r', 'succeeded', now(), now(), '{}', 5, 2, ['image', 'text'], '{}', "
                    "NULL)")
        con.executemany("INSERT INTO item_labels VALUES ('r', ?, ?, ?, 0.5, 0.1, ?, ?, ?, ?, ?)",
                        [list(row) for row in LABELS])
    with store.connect(db) as con:  # upgrades: the old runs' labels become their joint_labels rows
        got = {row[0]: row[1:] for row in con.execute(
            "SELECT item_id, label, confidence, agreeing_modalities, status FROM consensus_labels"
        ).fetchall()}
    assert got == {  # confidence NULL: the margins they had are not probabilities
        "agree": ("a", None, 2, "agreed"),
        "tie": ("b", None, 1, "by_margin"),  # margin 0.40 beats 0.10
        "even": (None, None, 1, "undecided"),  # one vote each, equal margins
        "wrong": ("b", None, 2, "agreed"),
        "alone": ("a", None, 1, "single_modality"),
    }


# -- the flow --------------------------------------------------------------------------------------------------


def test_a_run_ranks_flipped_catalog_labels_first(prefect_harness, tmp_path):
    items, classes = make_catalog(1500, 5, seed=11)
    rng = np.random.default_rng(11)
    flipped = rng.random(items.num_rows) < 0.1
    names = classes.column("class_name").to_pylist()
    labels = items.column("label").to_pylist()
    noisy = [names[(names.index(v) + int(rng.integers(1, 5))) % 5] if f else v for v, f in zip(labels, flipped)]
    items = items.set_column(items.schema.get_field_index("label"), "label", pa.array(noisy))
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = tmp_path / "out.duckdb"
    summary = reclassify_catalog(ReclassifyParams(
        items=items_glob, classes=classes_path, db=str(db), gold_column="label", chunk_size=500,
    ))
    with duckdb.connect(str(db), read_only=True) as con:
        issues = con.execute("SELECT item_id FROM annotation_issues WHERE run_id = ? ORDER BY rank",
                             [summary["run_id"]]).fetchall()
        statuses = dict(con.execute("SELECT status, count(*) FROM consensus_labels GROUP BY ALL").fetchall())
    flipped_ids = set(pc.filter(items.column("item_id"), pa.array(flipped)).to_pylist())
    top = {item for (item,) in issues[: len(flipped_ids)]}
    # the synthetic catalog is easy (about 95% accuracy): most flips are found, ranked first
    assert len(top & flipped_ids) >= 0.8 * len(flipped_ids)
    assert sum(statuses.values()) == items.num_rows
    assert statuses.get("agreed", 0) > 0.5 * items.num_rows

