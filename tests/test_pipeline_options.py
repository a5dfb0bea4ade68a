"""The flow with the options that change pass 1's statistics: they survive the partition files intact."""

import duckdb
import numpy as np
import pytest

from conftest import write_catalog, write_hive_catalog
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import PairwiseClassifier, embeddings, make_catalog

pytestmark = pytest.mark.usefixtures("prefect_harness")

OPTIONS = [
    {"pair_margin": 0.02, "score_floor": 0.05, "candidates": 4, "max_dims": 40, "seed": 5},
    {"pair_margin": 0.05, "min_dims": 8, "max_dims": 24, "strategy": "round_robin", "seed": 2},
]


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(1600, 9, seed=8, signal_strength=0.1)


@pytest.mark.parametrize("options", OPTIONS, ids=["pruned-floor-margin", "round-robin-margin"])
def test_partitioned_run_equals_the_core_on_the_whole_catalog(tmp_path, catalog, options):
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2, row_group_size=200)
    db = tmp_path / "out.duckdb"
    summary = reclassify_catalog(ReclassifyParams(
        items=items_glob, classes=classes_path, db=str(db), gold_column="label", chunk_size=200, **options))
    assert summary["details"]["n_partitions"] == 8
    names = classes.column("class_name").to_pylist()
    ids = items.column("item_id").to_pylist()
    with duckdb.connect(str(db), read_only=True) as con:
        for modality in ("image", "text"):
            x = embeddings(items, f"{modality}_embedding")
            clf = PairwiseClassifier(embeddings(classes, f"{modality}_embedding"), **options).fit(x)
            # the pair margin took items out of some sets (kept summed per pair, or per item)
            assert clf.stats_.correction_keys.size + clf.stats_.near_keys.size > 0
            core = clf.classify(x)
            written = dict(((item, (label, margin)) for item, label, margin in con.execute(
                "SELECT item_id, pairwise_class, pairwise_margin FROM item_labels WHERE modality = ?",
                [modality]).fetchall()))
            assert [written[i][0] for i in ids] == [names[k] for k in core.label]
            np.testing.assert_allclose([written[i][1] for i in ids], core.margin, rtol=1e-6, atol=1e-7)
            masks = con.execute(
                "SELECT class_a, class_b, dims, n_a, n_b FROM pair_masks WHERE modality = ? ORDER BY class_a, class_b",
                [modality]).fetchall()
            expected = sorted(
                (names[a], names[b], np.flatnonzero(mask).tolist(), int(n_a), int(n_b))
                for (a, b), mask, (n_a, n_b) in zip(clf.pairs_, clf.pair_masks_, clf.pair_counts_ab_, strict=True)
            )
            assert masks == expected
            assert max(len(dims) for _, _, dims, _, _ in masks) <= options["max_dims"]


def test_a_sampled_fit_is_the_same_whatever_the_files_and_partitions(tmp_path, catalog):
    """The refinement's sample is smaller than the catalog here: its items are chosen by their hash, so
    another --chunk-size or another split into files fits the same model and gives the same labels. Written
    partitioned by its label (Hive folders ``label=c03/``, as Spark's partitionBy writes), the catalog's gold
    column is read from the folder names: the same labels and the same gold metrics."""
    items, classes = catalog
    labelled, metrics = [], []
    for name, n_files, chunk_size in (("a", 2, 200), ("b", 1, 1600), ("hive", 0, 200)):
        if n_files:
            items_glob, classes_path = write_catalog(tmp_path / name, items, classes, n_files=n_files,
                                                     row_group_size=chunk_size)
        else:
            items_glob, classes_path = write_hive_catalog(tmp_path / name, items, classes, "label")
        db = tmp_path / f"{name}.duckdb"
        summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db),
                                                      gold_column="label", chunk_size=chunk_size, refine_sample=300))
        assert summary["details"]["n_partitions"] == (1600 // chunk_size if n_files else 9)  # hive: a file a class
        with duckdb.connect(str(db), read_only=True) as con:
            labelled.append(con.execute(
                "SELECT item_id, modality, refined_class, refined_confidence FROM item_labels "
                "UNION ALL SELECT item_id, 'joint', label, confidence FROM joint_labels "
                "ORDER BY ALL").fetchall())
            metrics.append(con.execute("SELECT method, metric, modality_a, modality_b, value FROM agreement_metrics "
                                       "WHERE modality_b = 'gold' ORDER BY ALL").fetchall())
    first = labelled[0]
    for other in labelled[1:]:
        assert [row[:3] for row in first] == [row[:3] for row in other]
        np.testing.assert_allclose([row[3] for row in first], [row[3] for row in other], rtol=0, atol=1e-5)
    assert len(metrics[0]) >= 10  # gold metrics there are, read from the folders as from the column
    for other in metrics[1:]:
        assert [row[:4] for row in other] == [row[:4] for row in metrics[0]]
        np.testing.assert_allclose([row[4] for row in other], [row[4] for row in metrics[0]], rtol=0, atol=1e-6)
