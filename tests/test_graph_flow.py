"""The graph refinement (--graph-k) through real flow runs: labels, a missing modality, stored models, Dask,
and the kNN index's recall."""

import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from scipy import sparse

from conftest import write_catalog
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import make_catalog
from tasks.graph import (
    PROBES, VOTE_POWER, VOTE_PSEUDO_COUNT, _members, _placed_rows, build_index, key_order, list_neighbours, n_lists,
    nearest_lists, neighbours, recall, stored_neighbours,
)
from tasks.sample import folds_of, item_hash

N_ITEMS, N_CLASSES = 1500, 6
OPTIONS = {"signal_strength": 0.08, "label_noise": 0.0}  # a weak class signal: some labels for the graph to move


def rows(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def run(tmp_path, name, items_glob, classes_path, **options):
    db = tmp_path / f"{name}.duckdb"
    summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db),
                                                  gold_column="label", chunk_size=500, run_id=name, **options))
    return summary, db


@pytest.fixture(scope="module")
def catalog():
    items, classes = make_catalog(N_ITEMS, N_CLASSES, seed=11, **OPTIONS)
    # two items lose their image embedding: the graph must still label them from their text
    image = items.column("image_embedding").to_pylist()
    image[3] = image[700] = None
    items = items.set_column(items.schema.get_field_index("image_embedding"), "image_embedding",
                             pa.array(image, items.schema.field("image_embedding").type))
    return items, classes


@pytest.mark.usefixtures("prefect_harness")
def test_the_graph_rewrites_refined_and_joint_labels_and_keeps_base_and_pairwise(tmp_path, catalog):
    items_glob, classes_path = write_catalog(tmp_path / "in", *catalog, n_files=2)
    _, db_off = run(tmp_path, "off", items_glob, classes_path, graph_k=0)
    summary, db = run(tmp_path, "graph", items_glob, classes_path, graph_k=10)

    same = "SELECT item_id, modality, base_class, pairwise_class, pairwise_margin FROM item_labels ORDER BY ALL"
    assert rows(db, same) == rows(db_off, same)
    assert rows(db, "SELECT count(*) FROM item_labels")[0][0] == 2 * N_ITEMS - 2
    assert rows(db, "SELECT item_id FROM rejected_items ORDER BY 1") == [("item-0000003",), ("item-0000700",)]
    # the graph moved some labels, and every item still has one joint label
    moved = rows(db, "SELECT count(*) FROM item_labels AS g JOIN item_labels AS o USING (item_id, modality) "
                     "WHERE g.refined_class <> o.refined_class", [])
    assert rows(db_off, "SELECT count(*) FROM joint_labels")[0][0] == N_ITEMS
    joint = {item: (label, confidence, status, n) for item, label, confidence, status, n in rows(
        db, "SELECT item_id, label, confidence, status, n_modalities FROM joint_labels")}
    assert len(joint) == N_ITEMS
    assert joint["item-0000003"][2:] == ("single_modality", 1) and joint["item-0000700"][3] == 1
    assert all(0 < confidence <= 1 + 1e-6 for _, confidence, _, _ in joint.values())
    with duckdb.connect(str(db_off), read_only=True) as off, duckdb.connect(str(db), read_only=True) as on:
        before = dict(off.execute("SELECT item_id, refined_class FROM item_labels WHERE modality = 'image'").fetchall())
        after = dict(on.execute("SELECT item_id, refined_class FROM item_labels WHERE modality = 'image'").fetchall())
    assert moved and sum(before[i] != after[i] for i in before) > 0
    # what the graph buys is measured on real catalogs (docs/results.md): a synthetic catalog's noise is
    # isotropic, so its neighbours say little

    details = json.loads(rows(db, "SELECT details FROM runs")[0][0])["graph"]
    assert details["k"] == details["k_used"] == 10 and details["items"] == N_ITEMS
    dims = sum(len(catalog[0].column(f"{m}_embedding")[0]) for m in ("image", "text"))
    assert details["dims"] == min(128, dims)  # the projection's, not the constant
    assert details["index"] == f"faiss IVF{n_lists(N_ITEMS)},Flat nprobe {PROBES}"
    assert 0.9 <= details["recall"] <= 1 and details["edges"] >= N_ITEMS * 10
    assert {"build_s", "search_s", "apply_s", "total_s"} <= details.keys()
    assert summary["run_id"] == "graph"
    assert (f"- graph refinement: refined and joint labels propagated over a 10-nearest-neighbour graph of "
            f"{N_ITEMS:,} items (recall {details['recall']:.3f}, calibration gold)") in summary["report"]
    assert "graph refinement" not in run(tmp_path, "plain", items_glob, classes_path)[0]["report"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_catalog_smaller_than_k_says_how_many_neighbours_each_item_had(tmp_path):
    items, classes = make_catalog(15, 3, seed=2)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    summary, db = run(tmp_path, "tiny", items_glob, classes_path, graph_k=50)
    details = json.loads(rows(db, "SELECT details FROM runs")[0][0])["graph"]
    assert (details["k"], details["k_used"], details["items"]) == (50, 14, 15)
    assert "over a 14-nearest-neighbour graph of 15 items" in summary["report"]
    assert rows(db, "SELECT count(*) FROM joint_labels WHERE label IS NOT NULL")[0][0] == 15


@pytest.mark.usefixtures("prefect_harness")
def test_a_catalog_whose_every_item_is_rejected_runs_without_the_graph_and_says_why(tmp_path):
    """Every embedding null: the run without the graph rejects every item and succeeds; with it, the run failed
    in faiss (no points to train its lists on) after a mean of no rows had made the projection NaN."""
    items, classes = make_catalog(40, 3, seed=2)
    for column in ("image_embedding", "text_embedding"):
        field = items.schema.field(column)
        items = items.set_column(items.schema.get_field_index(column), field, pa.nulls(items.num_rows, field.type))
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    summary, db = run(tmp_path, "rejected", items_glob, classes_path, graph_k=10)
    assert rows(db, "SELECT status FROM runs") == [("succeeded",)]
    assert json.loads(rows(db, "SELECT details FROM runs")[0][0])["graph"] == {
        "k": 10, "skipped": "no item has a usable embedding"}
    assert rows(db, "SELECT count(*) FROM rejected_items") == [(80,)]
    assert rows(db, "SELECT DISTINCT status FROM catalog_labels") == [("rejected",)]
    assert "graph refinement (k 10): skipped, no item has a usable embedding" in summary["report"]


@pytest.mark.usefixtures("prefect_harness")
def test_the_review_weighs_in_the_neighbours_given_labels_before_it_keeps_the_issues(tmp_path, catalog):
    items, classes = catalog
    # a tenth of the given labels flipped to the next class: errors for the review to find
    truth = items.column("label").to_pylist()
    names = sorted(set(truth))
    flipped = {i for i in range(0, N_ITEMS, 10)}
    noisy = [names[(names.index(label) + 1) % len(names)] if i in flipped else label for i, label in enumerate(truth)]
    items = items.set_column(items.schema.get_field_index("label"), "label", pa.array(noisy, pa.string()))
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    _, db_off = run(tmp_path, "off", items_glob, classes_path, graph_k=0, issues_below=1.0)
    summary, db = run(tmp_path, "vote", items_glob, classes_path, graph_k=10, issues_below=1.0)
    _, db_kept = run(tmp_path, "kept", items_glob, classes_path, graph_k=10, issues_below=0.5)

    issues = ("SELECT item_id, given_label, p_given, route, zero_shot_p_given, label_aware_p_given, "
              "neighbours_p_given, neighbours_label, rank FROM annotation_issues ORDER BY item_id")
    off, on = rows(db_off, issues), rows(db, issues)
    assert [r[:2] for r in on] == [r[:2] for r in off] and len(on) == N_ITEMS  # every labelled item, both runs
    assert {r[3] for r in off} == {"both"} and all(r[6] is None and r[7] is None for r in off)
    assert {r[3] for r in on} == {"both+neighbours"}
    # the two routes' own evidence is the pass's; the vote moves p_given, and the rank follows it
    assert [r[4:6] for r in on] == [r[4:6] for r in off]
    assert sum(abs(a[2] - b[2]) > 1e-6 for a, b in zip(on, off)) > N_ITEMS // 2
    assert all(0 < r[6] < 1 and r[7] in names for r in on)
    assert [r[0] for r in sorted(on, key=lambda r: r[8])] == [r[0] for r in sorted(on, key=lambda r: (r[2], r[0]))]
    # it finds the flipped labels better than the routes alone (a synthetic catalog's neighbours say little: a
    # real catalog's figures are in docs/results.md)
    def flipped_in_top(found):
        return len({int(r[0].split("-")[1]) for r in sorted(found, key=lambda r: r[8])[:len(flipped)]} & flipped)
    assert flipped_in_top(on) >= flipped_in_top(off)
    # the issues kept under --issues-below are picked after the vote: exactly the rows below it
    kept = rows(db_kept, issues)
    assert [r[:8] for r in kept] == [r[:8] for r in on if r[2] < 0.5] and 0 < len(kept) < N_ITEMS
    details = json.loads(rows(db, "SELECT details FROM runs")[0][0])["graph"]
    assert details["vote"] == {"power": VOTE_POWER, "pseudo_count": VOTE_PSEUDO_COUNT}
    # the report shows the vote's evidence and says what it is
    header = next(line for line in summary["report"].splitlines() if line.startswith("| rank "))
    assert header.replace(" ", "").endswith("|agree|nbp_given|nblabel|")
    assert "+neighbours (nb): the graph's (--graph-k) vote joins the route" in summary["report"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_stored_model_relabels_with_the_graph_as_its_fit_did(tmp_path, catalog):
    items_glob, classes_path = write_catalog(tmp_path / "in", *catalog, n_files=3)
    _, db = run(tmp_path, "fit", items_glob, classes_path, graph_k=8, issues_below=1.0)
    db = str(db)
    reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=db, gold_column="label",
                                        chunk_size=700, run_id="relabel", model="latest", graph_k=8,
                                        issues_below=1.0))
    labels = "SELECT item_id, modality, refined_class FROM item_labels WHERE run_id = ? ORDER BY ALL"
    assert rows(db, labels, ["relabel"]) == rows(db, labels, ["fit"])  # another partitioning, the same labels
    joint = "SELECT item_id, label, status FROM joint_labels WHERE run_id = ? ORDER BY ALL"
    assert rows(db, joint, ["relabel"]) == rows(db, joint, ["fit"])
    issues = "SELECT item_id, p_given, route, neighbours_p_given FROM annotation_issues WHERE run_id = ? ORDER BY ALL"
    assert rows(db, issues, ["relabel"]) == rows(db, issues, ["fit"]) != []  # the review with the vote too

    _, db_plain = run(tmp_path, "plain", items_glob, classes_path)
    with pytest.raises(ValueError, match=r"model \S+ was fitted without the graph refinement; refit with --graph-k, "
                                         r"or label with --graph-k 0$"):
        reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db_plain),
                                            gold_column="label", model="latest", graph_k=8, run_id="refused"))
    assert rows(db_plain, "SELECT count(*) FROM runs WHERE run_id = 'refused'")[0][0] == 0


@pytest.mark.usefixtures("prefect_harness")
def test_the_graph_labels_the_same_items_alike_whatever_the_order_of_their_rows(tmp_path, catalog):
    """The index takes the points in their items' key order: the same items in shuffled rows, other files and
    partitions give the same graph, so the same labels and confidences, bit for bit, with the stored model and
    with a fit of its own; label_changes then says nothing moved."""
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    shuffled = items.take(np.random.default_rng(3).permutation(items.num_rows))
    shuffled_glob, _ = write_catalog(tmp_path / "shuffled", shuffled, classes, n_files=3, row_group_size=300)
    _, db = run(tmp_path, "fit", items_glob, classes_path, graph_k=8, issues_below=1.0)
    db = str(db)
    reclassify_catalog(ReclassifyParams(items=shuffled_glob, classes=classes_path, db=db, gold_column="label",
                                        chunk_size=400, run_id="shuffled", model="latest", graph_k=8,
                                        issues_below=1.0))
    _, refit = run(tmp_path, "refit", shuffled_glob, classes_path, graph_k=8, issues_below=1.0)
    labels = ("SELECT item_id, modality, refined_class, refined_confidence FROM item_labels WHERE run_id = ? "
              "ORDER BY item_id, modality")
    joint = "SELECT item_id, label, confidence, status FROM joint_labels WHERE run_id = ? ORDER BY item_id"
    issues = "SELECT item_id, p_given, neighbours_p_given, neighbours_label FROM annotation_issues WHERE run_id = ? "
    issues += "ORDER BY item_id"
    for query in (labels, joint, issues):
        fitted = rows(db, query, ["fit"])
        assert len(fitted) >= N_ITEMS
        assert rows(db, query, ["shuffled"]) == fitted  # the stored model: bit for bit
        # a fit of its own: the same labels; the model's sums merge in another order, so the confidences are the
        # same to float rounding (docs/operations.md: at most 5e-6 without the graph)
        own = rows(refit, query, ["refit"])
        assert [[v for v in r if not isinstance(v, float)] for r in own] == \
            [[v for v in r if not isinstance(v, float)] for r in fitted]
        np.testing.assert_allclose([[v for v in r if isinstance(v, float)] for r in own],
                                   [[v for v in r if isinstance(v, float)] for r in fitted], rtol=0, atol=1e-5)
    assert rows(db, "SELECT count(*) FROM label_changes WHERE run_id = 'shuffled'") == [(0,)]


def test_the_points_are_taken_in_their_keys_order_whatever_the_rows():
    keys = np.array([50, 7, 99, 7, 3, 20], np.uint64)
    assert key_order(keys, np.arange(6)).tolist() == [4, 1, 3, 5, 0, 2]  # equal keys in their rows' order
    assert key_order(keys, np.array([0, 2, 4, 5])).tolist() == [4, 5, 0, 2]
    shuffled = keys[np.random.default_rng(0).permutation(6)]  # the same items in other rows: the same keys' order
    assert shuffled[key_order(shuffled, np.arange(6))].tolist() == [3, 7, 7, 20, 50, 99]


def test_the_votes_go_to_their_rows_whatever_the_order_of_the_placed_rows():
    votes = sparse.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0], [0, 0, 3.0]]))
    placed = np.array([4, 0, 2])
    out = _placed_rows(votes, placed, 6).toarray()
    expected = np.zeros((6, 3))
    expected[placed] = votes.toarray()
    np.testing.assert_array_equal(out, expected)


def test_the_index_finds_the_exact_neighbours_of_a_seeded_catalog():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(40, 128))
    points = centres[rng.integers(0, 40, 6000)] + 0.3 * rng.normal(size=(6000, 128))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    found, cosines, timings, _ = neighbours(points, 10, seed=0)
    assert found.shape == (6000, 10) and not (found == np.arange(6000)[:, None]).any()  # never itself
    assert recall(points, found, seed=0) >= 0.9  # 0.93 here: points within a cluster are nearly equidistant
    np.testing.assert_allclose(cosines, np.einsum("nd,nkd->nk", points, points[found]), rtol=1e-5)
    assert timings["build_s"] >= 0 and timings["search_s"] >= 0
    again, _, _, _ = neighbours(points, 10, seed=0)
    np.testing.assert_array_equal(again, found)  # seeded k-means, lists filled in the points' order: the same graph


def test_a_list_at_a_time_sees_every_neighbour_a_search_point_by_point_would():
    """The catalog's neighbours come a list of the index at a time, against the union of the lists its points
    would scan: every point's k-th neighbour is at least as near as ``index.search``'s."""
    rng = np.random.default_rng(6)
    centres = rng.normal(size=(30, 128))
    points = centres[rng.integers(0, 30, 4000)] + 0.5 * rng.normal(size=(4000, 128))
    points = (points / np.linalg.norm(points, axis=1, keepdims=True)).astype(np.float32)
    found, cosines, _, index = neighbours(points, 10, seed=1)
    assert index.nlist == n_lists(4000) > 1 and index.nprobe == min(PROBES, index.nlist)
    _, ids = index.search(points, 11)
    searched = np.array([[j for j in row if j != i][:10] for i, row in enumerate(ids)])
    kth = np.einsum("nd,nd->n", points, points[searched[:, -1]])
    assert (cosines[:, -1] >= kth - 1e-6).all() and (found >= 0).all()


def test_the_lists_give_the_same_neighbours_on_any_number_of_threads():
    """Each list is searched by one thread with one BLAS and one OpenMP thread: the graph does not depend on
    how many cores search it, and faiss's settings are as they were after."""
    import faiss

    rng = np.random.default_rng(8)
    points = rng.normal(size=(3000, 64)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    threshold, omp = faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()
    index, probes = build_index(points, seed=0, threads=1)
    np.testing.assert_array_equal(nearest_lists(index, points, threads=3), probes)
    one, products = list_neighbours(index, points, 8, probes, threads=1)
    three = list_neighbours(index, points, 8, probes, threads=3)
    np.testing.assert_array_equal(three[0], one)
    np.testing.assert_array_equal(three[1], products)
    assert (one >= 0).all() and not (one == np.arange(3000)[:, None]).any()
    np.testing.assert_allclose(products, np.einsum("nd,nkd->nk", points, points[one]), rtol=1e-5)
    assert (faiss.cvar.distance_compute_blas_threshold, faiss.omp_get_max_threads()) == (threshold, omp)


def test_each_point_is_added_to_its_nearest_list_as_faiss_would_add_it():
    """The index takes each point's list from the search's nearest lists: the same lists, in the same order,
    as faiss's own ``add``."""
    import faiss

    rng = np.random.default_rng(9)
    points = rng.normal(size=(4000, 32)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    index, probes = build_index(points, seed=3)
    assert index.ntotal == 4000 and probes.shape == (4000, min(PROBES, index.nlist))
    own = faiss.clone_index(index)
    own.reset()
    own.add(points)
    for c in range(index.nlist):
        np.testing.assert_array_equal(_members(index)[c], _members(own)[c])
        assert (probes[_members(index)[c], 0] == c).all()


def test_a_stored_item_queried_again_is_not_its_own_neighbour():
    """A night's changed item has a row of its own in the stored index (its old point): skipped by its key.
    A new item (another key) finds the stored points as they are, the nearest first."""
    rng = np.random.default_rng(5)
    points = rng.normal(size=(800, 128)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    keys = rng.permutation(10**6)[:800].astype(np.uint64)
    index, _ = build_index(points, seed=0)
    own, cosines = stored_neighbours(index, points[:50], keys[:50], keys, 5)
    assert own.shape == (50, 5) and (own >= 0).all() and not (own == np.arange(50)[:, None]).any()
    np.testing.assert_allclose(cosines, np.einsum("nd,nkd->nk", points[:50], points[own]), atol=1e-5)  # exact points
    new, _ = stored_neighbours(index, points[:50], np.full(50, 10**7, np.uint64), keys, 5)
    assert (new[:, 0] == np.arange(50)).mean() > 0.95
    few, missing = stored_neighbours(build_index(points[:3], seed=0)[0], points[:1], keys[:1], keys[:3], 5)
    assert few.shape == (1, 3) and sorted(few[0, :2]) == [1, 2] and few[0, 2] == -1 and np.isnan(missing[0, 2])


def test_a_model_stored_with_an_hnsw_index_still_finds_its_neighbours():
    """A model stored before the IVF index keeps an HNSW one: a night still searches it (efSearch set)."""
    import faiss

    rng = np.random.default_rng(7)
    points = rng.normal(size=(600, 128)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    keys = np.arange(600, dtype=np.uint64)
    old = faiss.IndexHNSWSQ(128, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
    old.train(points)
    old.add(points)
    index = faiss.deserialize_index(faiss.serialize_index(old))
    found, _ = stored_neighbours(index, points[:40], np.full(40, 10**7, np.uint64), keys, 5)
    assert index.hnsw.efSearch >= 12 and (found[:, 0] == np.arange(40)).mean() > 0.95


def night_catalog(items: pa.Table, n_new: int, n_changed: int) -> tuple[pa.Table, pa.Table]:
    """Day 0 (all but the last ``n_new`` items) and day 1: every item, the first ``n_changed`` given the
    embeddings of items further on (mostly of other classes)."""
    day1 = items
    for column in ("image_embedding", "text_embedding"):
        values = day1.column(column).to_pylist()
        values[10 : 10 + n_changed] = values[900 : 900 + n_changed]
        day1 = day1.set_column(day1.schema.get_field_index(column), column,
                               pa.array(values, day1.schema.field(column).type))
    return items.slice(0, items.num_rows - n_new), day1


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_with_narrow_views_reads_partitions_with_nothing_to_label(tmp_path):
    """Views of 2 x 32 dims project to 64, not 128: a partition the night reads but labels nothing of staged
    (0, 128) points, and the night failed to stack them with the others."""
    from pairwise_core.catalog import Modality

    items, classes = make_catalog(1200, 4, seed=5, modalities=(Modality("image", 32, 0.045),
                                                               Modality("text", 32, 0.035)))
    glob0, classes_path = write_catalog(tmp_path / "d0", items, classes, n_files=2)
    _, db = run(tmp_path, "narrow", glob0, classes_path, graph_k=5)
    day1 = night_catalog(items, 0, 20)[1]
    glob1, _ = write_catalog(tmp_path / "d1", day1, classes, n_files=2)  # both files rewritten, 20 rows changed
    night = reclassify_catalog(ReclassifyParams(items=glob1, classes=classes_path, db=str(db), chunk_size=200,
                                                run_id="narrow-night", model="latest", incremental=True, graph_k=5))
    assert night["details"]["night"]["labelled"] == 20 and night["details"]["graph"]["inductive"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_labels_its_items_inductively_against_the_stored_graph(tmp_path, catalog):
    """A full run with the graph stores its neighbourhood with the model; a night's new and changed items then
    take one step against their stored neighbours, and the other items keep their labels."""
    import shutil

    from tasks.models import ModelMismatch

    n_new, n_changed = 200, 20
    day0, day1 = night_catalog(catalog[0], n_new, n_changed)
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, catalog[1], n_files=2)
    glob1, _ = write_catalog(tmp_path / "d1", day1, catalog[1], n_files=3)
    _, db = run(tmp_path, "day0", glob0, classes_path, graph_k=5)
    [(model_id, content_hash, path)] = rows(db, "SELECT model_id, content_hash, path FROM models")
    folder = db.parent / path
    manifest = (folder / "model.json").read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == content_hash  # sealed again, with the neighbourhood
    assert {"neighbourhood.npz", "neighbourhood.json", "neighbourhood.faiss"} <= json.loads(manifest)["files"].keys()
    # the same day 0 for two other nights: copies of the file and its model store, under other names
    plain, tampered = tmp_path / "plain.duckdb", tmp_path / "tampered.duckdb"
    for copy in (plain, tampered):
        shutil.copy(db, copy)
        shutil.copytree(f"{db}.models", f"{copy}.models")

    def night(target, run_id, graph_k):
        return reclassify_catalog(ReclassifyParams(
            items=glob1, classes=classes_path, db=str(target), gold_column="label", chunk_size=500, run_id=run_id,
            model="latest", incremental=True, graph_k=graph_k))

    before = dict(rows(db, "SELECT item_id, label FROM catalog_labels"))
    summary = night(db, "night", 5)
    night(plain, "night", 0)
    assert (f"- graph refinement, inductive: {n_new + n_changed:,} items each took one step against its 5 nearest "
            f"of the model's {day0.num_rows:,} stored items") in summary["report"]
    details = json.loads(rows(db, "SELECT details FROM runs WHERE run_id = 'night'")[0][0])["graph"]
    assert details["inductive"] and details["k"] == 5 and details["stored_k"] == 5
    assert details["items"] == n_new + n_changed and details["neighbours"] == 5 * (n_new + n_changed)
    assert details["stored_items"] == day0.num_rows
    assert {"load_s", "search_s", "apply_s", "total_s"} <= details.keys()

    labelled = "SELECT item_id, modality, base_class, pairwise_class, refined_class FROM item_labels " \
               "WHERE run_id = 'night' ORDER BY ALL"
    with_graph, without = rows(db, labelled), rows(plain, labelled)
    new = {f"item-{i:07d}" for i in range(day0.num_rows, N_ITEMS)}
    changed = {f"item-{i:07d}" for i in range(10, 10 + n_changed)}
    assert {r[0] for r in with_graph} == new | changed
    assert [r[:4] for r in with_graph] == [r[:4] for r in without]  # base and pairwise labels as without the graph
    assert sum(a[4] != b[4] for a, b in zip(with_graph, without)) > 0  # the refined ones moved by the step
    after = dict(rows(db, "SELECT item_id, label FROM catalog_labels"))
    assert len(after) == N_ITEMS
    assert all(after[item] == label for item, label in before.items() if item not in changed)
    joint = rows(db, "SELECT count(*) FROM joint_labels WHERE run_id = 'night'")[0][0]
    assert joint == n_new + n_changed
    # the drift tests compare labels made as the fit sample's were, before the graph step: the same as without
    shares = "SELECT value FROM drift_metrics WHERE run_id = 'night' AND metric = 'class_share_js_distance'"
    assert rows(db, shares) == rows(plain, shares) != []
    quiet = night(db, "quiet", 5)  # the same files again: nothing to label, and the step says why it did not run
    assert quiet["details"]["graph"] == {"k": 5, "skipped": "no item to label", "model_k": 5, "k_from": "option"}
    assert "- graph refinement (k 5): skipped, no item to label" in quiet["report"]

    # a stored neighbourhood changed on disk, its arrays, scalars or index, is refused in one line before the
    # night writes anything (bad input, exit 2), as every other part of a model is: it was found once the night
    # had labelled its items, a failed run (exit 1); a night without --graph-k follows the model, and so reads it
    before_runs = rows(tampered, "SELECT run_id, status FROM runs ORDER BY ALL")
    for name in ("neighbourhood.npz", "neighbourhood.json", "neighbourhood.faiss"):
        stored = Path(f"{tampered}.models") / model_id / name
        kept = stored.read_bytes()
        stored.write_bytes(kept[:-10] if name.endswith(".json") else kept[:-100])
        for graph_k in (5, None):
            with pytest.raises(ModelMismatch, match=f"^model {model_id}: file {name} does not match its recorded "
                                                    "hash; refit with a full run$"):
                night(tampered, name, graph_k)
        stored.write_bytes(kept)
        assert rows(tampered, "SELECT run_id, status FROM runs ORDER BY ALL") == before_runs
        assert not Path(f"{tampered}.staging", name).exists()
    assert night(tampered, "mended", 5)["details"]["graph"]["inductive"]  # the same files again: labelled
    # a night with graph_k 0 does not read the neighbourhood: a damaged one does not stop it
    stored = Path(f"{tampered}.models") / model_id / "neighbourhood.faiss"
    stored.write_bytes(stored.read_bytes()[:-100])
    assert night(tampered, "without", 0)["details"]["graph"]["k"] == 0


@pytest.mark.usefixtures("prefect_harness")
def test_a_graph_over_a_reference_labels_the_other_items_as_a_night_would(tmp_path, catalog):
    """With more items than ``graph_reference``, the graph is built over that many (the smallest keys) and every
    other item takes one step against them; the model stores only the reference, and a night's new item with
    the same embeddings and fold as an item outside it gets the label and confidence the run gave that item."""
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    summary, db = run(tmp_path, "day0", items_glob, classes_path, graph_k=5, graph_reference=600)
    details = json.loads(rows(db, "SELECT details FROM runs")[0][0])["graph"]
    assert details["items"] == N_ITEMS and details["reference"] == 600 and details["recall_queries"] == 600
    assert details["index"] == f"faiss IVF{n_lists(600)},Flat nprobe {min(PROBES, n_lists(600))}"
    assert details["edges"] >= 600 * 5 + (N_ITEMS - 600) * 5 and details["outside_search_s"] >= 0
    assert details["sharpen_outside"].keys() == details["sharpen"].keys() == {"0", "1", "joint"}
    assert (f"of 600 items (recall {details['recall']:.3f}, calibration gold); the other {N_ITEMS - 600:,} items "
            "each took one step against its 5 nearest of them") in summary["report"]
    joint = {item: (label, confidence) for item, label, confidence in rows(
        db, "SELECT item_id, label, confidence FROM joint_labels")}
    assert len(joint) == N_ITEMS and None not in [label for label, _ in joint.values()]
    [(path,)] = rows(db, "SELECT path FROM models")
    with np.load(db.parent / path / "neighbourhood.npz") as stored:
        reference = set(stored["keys"].tolist())
    keys = item_hash(items.column("item_id").combine_chunks(), 0)
    assert len(reference) == 600 and reference == set(np.sort(keys)[:600].tolist())

    # a night: copies of 40 items outside the reference under new ids of the same fold
    outside = [i for i in range(N_ITEMS) if int(keys[i]) not in reference and i not in (3, 700)][:40]
    copies = []
    for i in outside:
        fold = folds_of(keys[i : i + 1])[0]
        copies.append(next(name for j in range(100) if folds_of(item_hash(
            pa.array([name := f"copy-{i:07d}-{j}"]), 0))[0] == fold))
    new = items.take(outside).set_column(0, "item_id", pa.array(copies))
    night_glob, _ = write_catalog(tmp_path / "night", pa.concat_tables([items, new]), classes, n_files=3)
    reclassify_catalog(ReclassifyParams(items=night_glob, classes=classes_path, db=str(db), gold_column="label",
                                        chunk_size=500, run_id="night", model="latest", incremental=True))
    labelled = {item: (label, confidence) for item, label, confidence in rows(
        db, "SELECT item_id, label, confidence FROM joint_labels WHERE run_id = 'night'")}
    assert labelled.keys() == set(copies)
    night, fitted = [labelled[copy] for copy in copies], [joint[items.column("item_id")[i].as_py()] for i in outside]
    assert [label for label, _ in night] == [label for label, _ in fitted]
    # the same neighbours and powers (the run sharpens these items by the powers rounded as the model keeps them);
    # the item's own posterior rounds as its batch's float32 products do: confidences within 1e-6 (9e-7 here,
    # 1e-5 when the run used the powers unrounded)
    np.testing.assert_allclose([c for _, c in night], [c for _, c in fitted], rtol=0, atol=1e-6)


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_with_a_model_fitted_with_the_graph_follows_it_unless_graph_k_is_given(tmp_path, catalog):
    """Without --graph-k (prefect.yaml's nightly passes none) a run with a stored model uses the graph with the
    model's own k, as the same run with that --graph-k: a night labelled its items without the graph, silently;
    --graph-k 0 still turns it off, and the run records and logs that the model's graph was not used."""
    import shutil

    from flows.cli import _validated, build_parser

    # neither path names a k of its own: the command's options and a deployment's parameters leave it None
    args = build_parser().parse_args(["run", "--items", "i", "--classes", "c", "--db", "d", "--model", "latest"])
    assert _validated(ReclassifyParams, args).graph_k is None
    deployment = {"items": "i", "classes": "c", "model": "latest", "incremental": True}
    assert reclassify_catalog.validate_parameters({"params": deployment})["params"].graph_k is None

    day0, day1 = night_catalog(catalog[0], 200, 20)
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, catalog[1], n_files=2)
    glob1, _ = write_catalog(tmp_path / "d1", day1, catalog[1], n_files=2)
    _, db = run(tmp_path, "day0", glob0, classes_path, graph_k=5)
    given, off = tmp_path / "given.duckdb", tmp_path / "off.duckdb"
    for copy in (given, off):
        shutil.copy(db, copy)
        shutil.copytree(f"{db}.models", f"{copy}.models")

    def night(target, **options):
        return reclassify_catalog(ReclassifyParams(items=glob1, classes=classes_path, db=str(target),
                                                   gold_column="label", chunk_size=500, run_id="night",
                                                   model="latest", incremental=True, **options))

    followed = night(db)
    night(given, graph_k=5)
    stopped = night(off, graph_k=0)
    graph = followed["details"]["graph"]
    assert graph["inductive"] and graph["k"] == 5 and graph["items"] == 220
    assert graph["k_from"] == "model" and graph["model_k"] == 5
    params = "SELECT json_extract(params, '$.graph_k')::INT FROM runs WHERE run_id = 'night'"
    assert rows(db, params) == rows(given, params) == [(5,)]  # runs.params: the k the run used
    labels = "SELECT item_id, label, confidence FROM catalog_labels WHERE run_id = 'night' ORDER BY ALL"
    assert rows(db, labels) == rows(given, labels) != []
    assert stopped["details"]["graph"] == {"k": 0, "skipped": "--graph-k 0: the model's graph not used",
                                           "model_k": 5, "k_from": "option"}
    assert "- graph refinement (k 0): skipped, --graph-k 0: the model's graph not used" in stopped["report"]
    assert rows(off, params) == [(0,)]
    assert sum(a != b for a, b in zip(rows(db, labels), rows(off, labels), strict=True)) > 0

    # a whole relabel with the model (no --incremental) rebuilds the graph with the model's k too
    relabel = reclassify_catalog(ReclassifyParams(items=glob1, classes=classes_path, db=str(db), gold_column="label",
                                                  chunk_size=500, run_id="relabel", model="latest"))
    assert relabel["details"]["graph"]["k"] == 5 and not relabel["details"]["graph"].get("inductive")
    assert relabel["details"]["graph"]["k_from"] == "model"

    # a model stored without a neighbourhood (fitted before it was stored) has the k of the run that fitted it
    from tasks.models import seal
    from tasks.runs import fitted_graph_k

    [(model_id, path)] = rows(db, "SELECT model_id, path FROM models")
    older = tmp_path / "older"
    shutil.copytree(db.parent / path, older)
    for name in ("neighbourhood.npz", "neighbourhood.json", "neighbourhood.faiss", "model.json"):
        (older / name).unlink()
    content_hash = seal(str(older))
    assert fitted_graph_k(str(db), str(older), content_hash, model_id, True) == 5
    with pytest.raises(ValueError, match=r"^model other was fitted with the graph refinement and does not record "
                                         r"its k: give --graph-k K \(the k it was fitted with\), or --graph-k 0"):
        fitted_graph_k(str(db), str(older), content_hash, "other", True)  # no run of its own in runs
    assert fitted_graph_k(str(db), str(older), content_hash, "other", False) is None


@pytest.mark.usefixtures("prefect_harness")
def test_a_k_given_for_a_model_that_does_not_record_its_own_says_so_not_none(tmp_path, catalog, caplog):
    """A model fitted with the graph, stored without a neighbourhood, whose fitting run's parameters do not name
    its k either: a run given --graph-k 7 said nothing of the model's k (a line "fitted with k = None" was kept
    back by the caller); it says the model was fitted with the graph and does not record its k."""
    import logging

    from tasks.models import seal

    items_glob, classes_path = write_catalog(tmp_path / "in", *catalog)
    _, db = run(tmp_path, "fit", items_glob, classes_path, graph_k=5)
    with duckdb.connect(str(db)) as con:  # as a model stored before neighbourhoods were, its run's params lost
        model_id, path = con.execute("SELECT model_id, path FROM models").fetchone()
        for name in ("neighbourhood.npz", "neighbourhood.json", "neighbourhood.faiss"):
            (db.parent / path / name).unlink()
        con.execute("UPDATE models SET content_hash = ?", [seal(str(db.parent / path))])
        con.execute("UPDATE runs SET params = json_object('seed', 0) WHERE run_id = 'fit'")
    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(caplog.handler)
    try:
        summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db),
                                                      gold_column="label", chunk_size=500, run_id="given",
                                                      model="latest", graph_k=7))
    finally:
        logger.removeHandler(caplog.handler)
    said = list(dict.fromkeys(r.getMessage() for r in caplog.records if "as given" in r.getMessage()))
    assert said == [f"Graph refinement: k = 7 as given; model {model_id} was fitted with the graph refinement and "
                    "does not record its k"]
    assert not any("None" in r.getMessage() for r in caplog.records if "Graph" in r.getMessage())
    assert summary["details"]["graph"]["k"] == 7 and summary["details"]["graph"]["model_k"] is None


@pytest.mark.usefixtures("prefect_harness")
def test_a_label_the_graph_moved_under_the_same_model_and_embeddings_says_so(tmp_path, catalog):
    items_glob, classes_path = write_catalog(tmp_path / "in", *catalog, n_files=3)
    _, db = run(tmp_path, "fit", items_glob, classes_path, graph_k=8)
    reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db), gold_column="label",
                                        chunk_size=500, run_id="plain", model="latest", graph_k=0))  # the graph off
    causes = rows(db, "SELECT cause, count(*) FROM label_changes WHERE run_id = 'plain' GROUP BY ALL")
    moved = rows(db, "SELECT count(*) FROM joint_labels f JOIN joint_labels p USING (item_id) "
                     "WHERE f.run_id = 'fit' AND p.run_id = 'plain' AND f.label IS DISTINCT FROM p.label")[0][0]
    # neither the embeddings nor the model changed: the graph moved these labels, and only it
    assert moved > 0 and causes == [("neighbours", moved)]
