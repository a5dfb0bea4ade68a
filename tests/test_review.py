"""Review of the given labels: the classifier's evidence, the annotation_issues ranking, the old runs' consensus
rule after the upgrade, and the flow's table on a catalog with known flipped labels, by each route."""

import json

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
from pairwise_core.model import combine
from tasks import store
from tasks.label import REVIEW_SCHEMA
from tasks.review import MIN_REVIEW_ROWS, PARENT_WEIGHT, choose_route, rank_annotation_issues
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


# -- the ranking ------------------------------------------------------------------------------------------------


def review_part(path, rows):
    """A staged review_items part from (item_id, given, suggested, p_given[, p_given_parent]) rows."""
    n = len(rows)
    pq.write_table(pa.table({
        "item_id": [r[0] for r in rows], "given_label": [r[1] for r in rows],
        "suggested_label": [r[2] for r in rows], "p_given": [r[3] for r in rows],
        "p_given_parent": [r[4] if len(r) > 4 else None for r in rows], "route": ["both"] * n,
        "zero_shot_p_given": [0.5] * n, "zero_shot_label": ["a"] * n,
        "label_aware_p_given": [r[3] for r in rows], "label_aware_label": [r[2] for r in rows],
        "agreeing_modalities": pa.array([1] * n, pa.int32()),
        "neighbours_p_given": pa.nulls(n, pa.float64()), "neighbours_label": pa.nulls(n, pa.string()),
    }, schema=REVIEW_SCHEMA), path)
    return str(path)


def test_annotation_issues_rank_every_item_by_p_given_across_partitions(tmp_path):
    parts = [review_part(tmp_path / "a.parquet", [("x", "a", "b", 0.9), ("y", "a", "c", 0.05)]),
             review_part(tmp_path / "b.parquet", [("w", "b", "a", 0.05), ("z", "c", "a", 0.4)])]
    got = pq.read_table(rank_annotation_issues(parts, tmp_path / "w", "r")[0]).to_pylist()
    # lowest p_given first, ties by item_id; every item is ranked, the likely right ones last
    assert [(row["rank"], row["item_id"], row["p_given"]) for row in got] == [
        (1, "w", 0.05), (2, "y", 0.05), (3, "z", 0.4), (4, "x", 0.9)]
    assert {row["run_id"] for row in got} == {"r"}


def test_with_a_parent_level_a_wrong_parent_ranks_before_a_likelier_wrong_sibling(tmp_path):
    # p_given^(1 - w) * p_given_parent^w, w = PARENT_WEIGHT: 0.01^0.75 * 0.9^0.25 = 0.031 > 0.02 = 0.02 * 0.02
    part = review_part(tmp_path / "a.parquet", [("sibling", "a", "b", 0.01, 0.9), ("cross", "a", "c", 0.02, 0.02),
                                               ("right", "a", "b", 0.8, 0.95)])
    got = pq.read_table(rank_annotation_issues([part], tmp_path / "w", "r")[0]).to_pylist()
    assert PARENT_WEIGHT == 0.25
    assert [(row["item_id"], row["p_given_parent"]) for row in got] == [("cross", 0.02), ("sibling", 0.9),
                                                                        ("right", 0.95)]


def test_no_issue_no_file(tmp_path):
    part = tmp_path / "review.parquet"
    pq.write_table(REVIEW_SCHEMA.empty_table(), part)
    assert rank_annotation_issues([str(part)], tmp_path / "w", "r") == []


def test_the_route_falls_back_to_zero_shot_without_enough_labelled_rows():
    assert choose_route("auto", MIN_REVIEW_ROWS) == "both"
    assert choose_route("label-aware", MIN_REVIEW_ROWS - 1) == "zero-shot"
    assert choose_route("zero-shot", 10**6) == "zero-shot"


def test_combined_routes_are_a_normalized_weighted_product():
    rng = np.random.default_rng(0)
    aware, zero_shot = (np.log(rng.dirichlet(np.ones(4), 6)) for _ in range(2))
    got = combine(aware, zero_shot, np.array([0.7, 0.3]))
    expected = np.exp(aware) ** 0.7 * np.exp(zero_shot) ** 0.3
    np.testing.assert_allclose(np.exp(got), expected / expected.sum(axis=1, keepdims=True), rtol=1e-12)


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


def test_runs_before_the_joint_label_keep_their_vote_rule_after_the_upgrade(tmp_path):
    from test_schema import BEFORE_VERSIONS  # the tables as the code before schema versions wrote them

    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(BEFORE_VERSIONS[-1].read_text())
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


@pytest.mark.parametrize("route", ["zero-shot", "label-aware", "both"])
def test_a_run_ranks_flipped_catalog_labels_first(prefect_harness, tmp_path, route):
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
        items=items_glob, classes=classes_path, db=str(db), gold_column="label", chunk_size=500, review=route,
        issues_below=1.0,
    ))
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT item_id, p_given, route, zero_shot_p_given, label_aware_p_given, given_label, "
                           "suggested_label FROM annotation_issues WHERE run_id = ? ORDER BY rank",
                           [summary["run_id"]]).fetchall()
        statuses = dict(con.execute("SELECT status, count(*) FROM consensus_labels GROUP BY ALL").fetchall())
        details = json.loads(con.execute("SELECT details FROM runs").fetchone()[0])
    issues = [row[:1] for row in rows]
    assert details["review"]["route"] == route and {row[2] for row in rows} == {route}
    assert len(rows) == items.num_rows  # issues_below=1: every labelled item is ranked
    p_given = [row[1] for row in rows]
    assert p_given == sorted(p_given) and all(0 <= p <= 1 for p in p_given)
    assert all(row[5] != row[6] for row in rows)  # the suggestion is another class
    if route == "zero-shot":
        assert all(row[4] is None and row[1] == row[3] for row in rows)
    if route == "label-aware":
        assert all(row[1] == row[4] for row in rows)
    if route == "both":
        assert set(details["review"]["weights"]) == {"label_aware", "zero_shot"}
    flipped_ids = set(pc.filter(items.column("item_id"), pa.array(flipped)).to_pylist())
    top = {item for (item,) in issues[: len(flipped_ids)]}
    # the synthetic catalog is easy (about 95% accuracy): most flips are found, ranked first
    assert len(top & flipped_ids) >= 0.8 * len(flipped_ids)
    assert sum(statuses.values()) == items.num_rows
    assert statuses.get("agreed", 0) > 0.5 * items.num_rows



def test_by_default_annotation_issues_keep_the_labels_more_likely_wrong_than_right(prefect_harness, tmp_path):
    items, classes = make_catalog(1000, 4, seed=12)
    names = classes.column("class_name").to_pylist()
    flipped = np.arange(items.num_rows) % 10 == 0
    labels = items.column("label").to_pylist()
    noisy = [names[(names.index(v) + 1) % 4] if f else v for v, f in zip(labels, flipped)]
    items = items.set_column(items.schema.get_field_index("label"), "label", pa.array(noisy))
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db), gold_column="label"))
    with duckdb.connect(str(db), read_only=True) as con:
        p_given = [p for (p,) in con.execute("SELECT p_given FROM annotation_issues ORDER BY rank").fetchall()]
        no_parents = con.execute("SELECT count(*) FROM annotation_issues WHERE p_given_parent IS NOT NULL").fetchone()
    assert no_parents == (0,)  # classes without a parent column: no parent level to review
    assert p_given and max(p_given) < 0.5 and p_given == sorted(p_given)
    assert len(p_given) < items.num_rows / 2  # the clean majority is left out


def test_the_label_aware_review_sees_unit_rows_with_or_without_a_modality(prefect_harness, tmp_path):
    items, classes = make_catalog(1200, 4, seed=13)
    rng = np.random.default_rng(13)
    names = classes.column("class_name").to_pylist()
    flipped = rng.random(items.num_rows) < 0.1
    noisy = [names[(names.index(v) + 1) % 4] if f else v for v, f in zip(items.column("label").to_pylist(), flipped)]
    items = items.set_column(items.schema.get_field_index("label"), "label", pa.array(noisy))
    # one item in eight has no image embedding: scored by the text block of the same Gaussian (its marginal)
    no_image = np.arange(items.num_rows) % 8 == 3
    image = items.schema.get_field_index("image_embedding")
    items = items.set_column(image, "image_embedding", pc.if_else(
        pa.array(no_image), pa.nulls(items.num_rows, items.schema.field(image).type), items.column(image)))
    # the same catalog with every embedding stretched by a factor per item and modality: the review must not see it
    items_stretched = items
    for modality in ("image", "text"):
        name = f"{modality}_embedding"
        column = items.column(name).combine_chunks()
        rows = np.asarray(column.values).reshape(len(column), -1) * rng.uniform(0.2, 5.0, (len(column), 1))
        stretched = pa.FixedSizeListArray.from_arrays(pa.array(rows.astype(np.float32).ravel()), rows.shape[1],
                                                      mask=column.is_null())
        items_stretched = items_stretched.set_column(items.schema.get_field_index(name), name, stretched)

    def label_aware_p_given(catalog, name):
        items_glob, classes_path = write_catalog(tmp_path / name, catalog, classes)
        db = tmp_path / f"{name}.duckdb"
        summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db),
                                                      gold_column="label", review="label-aware", issues_below=1.0))
        with duckdb.connect(str(db), read_only=True) as con:
            return dict(con.execute("SELECT item_id, label_aware_p_given FROM annotation_issues WHERE run_id = ?",
                                    [summary["run_id"]]).fetchall())

    p_given, p_stretched = label_aware_p_given(items, "plain"), label_aware_p_given(items_stretched, "stretched")
    ids = items.column("item_id").to_pylist()
    assert set(p_given) == set(ids)  # every labelled item is reviewed, with one modality or two
    np.testing.assert_allclose([p_stretched[i] for i in ids], [p_given[i] for i in ids], atol=1e-4)
    partial = [(p_given[i], f) for i, missing, f in zip(ids, no_image, flipped) if missing]
    assert all(0 < p < 1 for p, _ in partial)
    assert np.median([p for p, f in partial if f]) < 0.5 < np.median([p for p, f in partial if not f])
