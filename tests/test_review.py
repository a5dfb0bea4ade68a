"""Review of the given labels: the evidence in the core, the annotation_issues and consensus_labels rules in SQL,
and the flow's table on a catalog with known flipped labels."""

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import PairwiseClassifier, make_catalog
from tasks import store
from tasks.sql import statement
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


# -- the SQL rules, on hand-made labels -----------------------------------------------------------------------

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


def labelled_db(path):
    with store.connect(path) as con:
        con.executemany(
            "INSERT INTO item_labels VALUES ('r', ?, ?, ?, 0.5, 0.1, ?, ?, ?, ?, ?)", [list(row) for row in LABELS]
        )
    return path


def test_consensus_labels_follow_the_documented_rule(tmp_path):
    db = labelled_db(tmp_path / "out.duckdb")
    with duckdb.connect(str(db), read_only=True) as con:
        got = {row[0]: row[1:] for row in con.execute(
            "SELECT item_id, label, round(CAST(confidence AS DOUBLE), 3), agreeing_modalities, status FROM consensus_labels"
        ).fetchall()}
    assert got == {
        "agree": ("a", 0.2, 2, "agreed"),  # the smaller of the two margins
        "tie": ("b", 0.3, 1, "by_margin"),  # 0.40 beats 0.10 by 0.30
        "even": (None, None, 1, "undecided"),  # one vote each, equal margins
        "wrong": ("b", 0.4, 2, "agreed"),
        "alone": ("a", 0.15, 1, "single_modality"),
    }


def test_annotation_issues_rank_the_evidence_against_the_given_label():
    with duckdb.connect() as con:
        con.execute(statement("create_item_labels"))
        con.executemany(
            "INSERT INTO item_labels VALUES ('r', ?, ?, ?, 0.5, 0.1, ?, ?, ?, ?, ?)", [list(row) for row in LABELS]
        )
        con.execute("CREATE VIEW labels AS SELECT * FROM item_labels")
        got = con.sql(statement("annotation_issues"), params={"run_id": "r"}).fetchall()
    ranked = [(rank, item, given_label, suggested, round(raw, 3), agreeing)
              for _, rank, item, given_label, suggested, _, raw, agreeing, _ in got]
    assert ranked == [
        (1, "wrong", "a", "b", 1.55, 2),  # both modalities say b, far from a: mean(1 + 0.6, 1 + 0.5)
        (2, "tie", "a", "b", 1.1, 1),  # mean(1 + 0.2, 1 + 0.0); b and c tie in votes, b has the larger margin
        (3, "even", "c", "a", 1.05, 1),  # mean(1 + 0.1, 1 + 0.0); a and b tie in votes and margin: first by name
        (4, "alone", "a", "c", 0.05, 0),  # only the base label disagrees: it is the suggestion
    ]  # "agree" has no evidence against it and is left out
    # score: raw_score standardized among the items given the same label ("agree" included);
    # "even" is alone in class c, so its score is 0
    given_a = np.array([0.0, 1.1, 1.55, 0.05])  # agree, tie, wrong, alone
    z = (given_a - given_a.mean()) / given_a.std()
    scores = {item: score for _, _, item, _, _, score, _, _, _ in got}
    assert scores == pytest.approx({"wrong": z[2], "tie": z[1], "even": 0.0, "alone": z[3]})
    evidence = got[0][-1]
    assert [e["modality"] for e in evidence] == ["image", "text"]
    assert evidence[0]["given_gap"] == pytest.approx(0.6) and evidence[0]["pairwise_label"] == "b"


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
