"""The labelling tasks' metric counts (tasks/metric_counts.py) and sql/metrics_*.sql over them compute exactly what
pairwise_core.metrics computes, and the confusion counts and calibration bins a count item by item gives, however
the labels are split into partitions."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core import accuracy, agreement_f1, calibration_bins, expected_calibration_error, f1_weighted
from tasks.metric_counts import MetricCounts
from tasks.metrics import agreement_metrics

METHODS = ("base", "pairwise", "refined")


def item_positions(labels: pa.Table) -> np.ndarray:
    """Each label row's item, as an index among the table's items."""
    return pa.compute.dictionary_encode(labels.column("item_id")).combine_chunks().indices.to_numpy()


def count_parts(labels: pa.Table, joint: pa.Table, items: list[str], class_names, parents, tmp_path,
                n_parts: int) -> tuple[list[str], list[str]]:
    """Count the labels in n_parts partitions (whole items per partition), as the labelling tasks do; the paths
    of each partition's staged counts."""
    confusion, calibration = [], []
    for k in range(n_parts):
        mine = pa.array(items[k::n_parts], pa.string())
        counts = MetricCounts(class_names, parents)
        part = labels.filter(pa.compute.is_in(labels.column("item_id"), value_set=mine))
        counts.add(part, item_positions(part),
                   joint.filter(pa.compute.is_in(joint.column("item_id"), value_set=mine)))
        paths = counts.save(tmp_path / f"confusion-{k}.parquet", tmp_path / f"calibration-{k}.parquet")
        confusion.append(paths[0])
        calibration.append(paths[1])
    return confusion, calibration


def sql_metrics(labels: pa.Table, joint: pa.Table, class_names, tmp_path, n_parts: int = 1,
                parents: dict[str, str] | None = None) -> dict[tuple, float]:
    """Count the labels in n_parts partitions and compute the metrics from the counts."""
    items = sorted(set(labels.column("item_id").to_pylist()))
    tables = agreement_metrics(*count_parts(labels, joint, items, class_names, parents, tmp_path, n_parts), "r",
                               parents is not None)
    counted = Counter()  # the confusion counts, item by item
    by_item = {}
    for row in labels.to_pylist():
        by_item.setdefault(row["item_id"], {})[row["modality"]] = row
    for rows in by_item.values():
        for method in METHODS:
            for a, b in ((a, b) for a in rows for b in rows if a < b):
                counted[method, a, b, rows[a][f"{method}_class"], rows[b][f"{method}_class"]] += 1
            for modality, row in rows.items():
                if row["gold_class"] is not None:
                    counted[method, modality, "gold", row[f"{method}_class"], row["gold_class"]] += 1
    for row in joint.to_pylist():
        if row["gold_class"] is not None:
            counted["refined", "joint", "gold", row["label"], row["gold_class"]] += 1
    assert {(r["method"], r["modality_a"], r["modality_b"], r["pred"], r["ref"]): r["n"]
            for r in tables["confusion_counts"].to_pylist()} == counted
    assert set(tables["confusion_counts"].column("run_id").to_pylist()) <= {"r"}
    return {(r["method"], r["metric"], r["modality_a"], r["modality_b"]): r["value"]
            for r in tables["agreement_metrics"].to_pylist()} | {"bins": tables["calibration_bins"].to_pylist()}


@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 5), st.integers(1, 3))
def test_sql_metrics_equal_core_metrics(tmp_path_factory, seed, n, k, n_parts):
    rng = np.random.default_rng(seed)
    names = np.array([f"c{i}" for i in range(k)])
    image, text = ({m: rng.integers(0, k, n) for m in METHODS} for _ in range(2))
    confidence = {"image": rng.random(n).astype(np.float32), "text": rng.random(n).astype(np.float32)}
    joint_label, joint_confidence, gold = rng.integers(0, k, n), rng.random(n).astype(np.float32), rng.integers(0, k, n)
    ids = [f"i{i}" for i in range(n)]
    labels = pa.table({
        "item_id": ids * 2,
        "modality": ["image"] * n + ["text"] * n,
        **{f"{m}_class": names[np.concatenate([image[m], text[m]])] for m in METHODS},
        "refined_confidence": np.concatenate([confidence["image"], confidence["text"]]),
        "gold_class": names[np.concatenate([gold, gold])],
    })
    joint = pa.table({"item_id": ids, "label": names[joint_label], "confidence": joint_confidence,
                      "gold_class": names[gold]})
    got = sql_metrics(labels, joint, names, tmp_path_factory.mktemp("m"), n_parts)
    for m in METHODS:
        assert got[(m, "agreement_f1_weighted", "image", "text")] == pytest.approx(agreement_f1(image[m], text[m]))
        for modality, predicted in (("image", image[m]), ("text", text[m])):
            assert got[(m, "gold_accuracy", modality, "gold")] == pytest.approx(accuracy(gold, predicted))
            assert got[(m, "gold_f1_weighted", modality, "gold")] == pytest.approx(f1_weighted(gold, predicted))
    assert got[("refined", "gold_accuracy", "joint", "gold")] == pytest.approx(accuracy(gold, joint_label))
    scored = {"image": (image["refined"], confidence["image"]), "text": (text["refined"], confidence["text"]),
              "joint": (joint_label, joint_confidence)}
    for modality, (predicted, conf) in scored.items():
        correct = predicted == gold
        assert got[("refined", "gold_ece", modality, "gold")] == pytest.approx(
            expected_calibration_error(correct, conf), abs=1e-6)
        rows = sorted((r["bin"], r["n"], r["confidence"], r["correct"]) for r in got["bins"] if r["modality"] == modality)
        sums = calibration_bins(correct, conf)
        assert [(b, int(n), int(hit)) for b, (n, _, hit) in enumerate(sums) if n > 0] == [(b, n, c) for b, n, _, c in rows]
        assert [c for _, _, c, _ in rows] == pytest.approx([c for n, c, _ in sums if n > 0], rel=1e-6)
    assert len(got) - 1 == 3 + 3 * 2 * 2 + 2 + 3  # agreement, per-modality gold, joint gold, ECE


def test_no_gold_means_no_gold_metrics(tmp_path):
    labels = pa.table({
        "item_id": ["a", "b", "a", "b"], "modality": ["image", "image", "text", "text"],
        "base_class": ["x", "y", "x", "x"], "pairwise_class": ["x", "y", "x", "y"], "refined_class": ["x", "y", "x", "y"],
        "refined_confidence": pa.array([0.9, 0.8, 0.7, 0.6], pa.float32()),
        "gold_class": pa.nulls(4, pa.string()),
    })
    joint = pa.table({"item_id": ["a", "b"], "label": ["x", "y"], "confidence": pa.array([0.9, 0.8], pa.float32()),
                      "gold_class": pa.nulls(2, pa.string())})
    got = sql_metrics(labels, joint, ["x", "y"], tmp_path)
    assert set(got) == {("base", "agreement_f1_weighted", "image", "text"), "bins",
                        ("pairwise", "agreement_f1_weighted", "image", "text"),
                        ("refined", "agreement_f1_weighted", "image", "text")}
    assert got[("refined", "agreement_f1_weighted", "image", "text")] == 1.0 and got["bins"] == []


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 5), st.integers(1, 3), st.integers(1, 2))
def test_sql_metrics_at_the_parent_level_equal_core_metrics_of_the_parents(tmp_path_factory, seed, n, k, n_parents,
                                                                          n_parts):
    rng = np.random.default_rng(seed)
    names = np.array([f"c{i}" for i in range(k)])
    parent_names = np.array([f"p{j}" for j in range(n_parents)])
    parent_of = rng.integers(0, n_parents, k)  # a parent may have one child, or none
    leaf = {m: rng.integers(0, k, 2 * n) for m in METHODS}
    gold = rng.integers(0, k, n)
    refined_parent, parent_confidence = rng.integers(0, n_parents, 2 * n), rng.random(2 * n).astype(np.float32)
    joint_parent, joint_confidence = rng.integers(0, n_parents, n), rng.random(n).astype(np.float32)
    ids = [f"i{i}" for i in range(n)]
    labels = pa.table({
        "item_id": ids * 2, "modality": ["image"] * n + ["text"] * n,
        **{f"{m}_class": names[leaf[m]] for m in METHODS},
        "refined_confidence": rng.random(2 * n).astype(np.float32), "gold_class": names[np.concatenate([gold, gold])],
        "parent_class": parent_names[refined_parent], "parent_confidence": parent_confidence,
    })
    joint = pa.table({"item_id": ids, "label": names[gold], "confidence": joint_confidence, "gold_class": names[gold],
                      "parent_label": parent_names[joint_parent], "parent_confidence": joint_confidence})
    got = sql_metrics(labels, joint, names, tmp_path_factory.mktemp("m"), n_parts,
                      dict(zip(names, parent_names[parent_of], strict=True)))
    gold_parent = parent_of[gold]
    for modality, rows in (("image", slice(0, n)), ("text", slice(n, 2 * n))):
        predicted = {"base": parent_of[leaf["base"][rows]], "pairwise": parent_of[leaf["pairwise"][rows]],
                     "refined": refined_parent[rows]}
        for m in METHODS:
            assert got[(f"{m}_parent", "gold_accuracy", modality, "gold")] == pytest.approx(
                accuracy(gold_parent, predicted[m]))
            assert got[(f"{m}_parent", "gold_f1_weighted", modality, "gold")] == pytest.approx(
                f1_weighted(gold_parent, predicted[m]))
        assert got[("refined_parent", "gold_ece", modality, "gold")] == pytest.approx(
            expected_calibration_error(predicted["refined"] == gold_parent, parent_confidence[rows]), abs=1e-6)
    assert got[("refined_parent", "gold_accuracy", "joint", "gold")] == pytest.approx(
        accuracy(gold_parent, joint_parent))
    assert got[("refined_parent", "gold_ece", "joint", "gold")] == pytest.approx(
        expected_calibration_error(joint_parent == gold_parent, joint_confidence), abs=1e-6)
    assert got[("base_parent", "agreement_f1_weighted", "image", "text")] == pytest.approx(
        agreement_f1(parent_of[leaf["base"][:n]], parent_of[leaf["base"][n:]]))


@given(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 4))
def test_confusion_counts_of_ragged_labels_equal_a_count_item_by_item(seed, n, k):
    """The counts stay a count item by item where an item lacks a modality, a refined label is missing (skipped,
    as no label), or the gold label is missing or names no class (counted as it is)."""
    rng = np.random.default_rng(seed)
    names = [f"c{i}" for i in range(k)]
    modalities = ("audio", "image", "text")
    rows = []
    for i in range(n):
        gold = [None, "elsewhere", *names][rng.integers(k + 2)]
        for modality in modalities:
            if rng.random() < 0.75:
                classes = {f"{m}_class": names[rng.integers(k)] for m in METHODS}
                if rng.random() < 0.2:
                    classes["refined_class"] = None
                rows.append({"item_id": f"i{i}", "modality": modality, **classes, "gold_class": gold})
    counted = Counter()
    by_item = {}
    for row in rows:
        by_item.setdefault(row["item_id"], {})[row["modality"]] = row
    for item in by_item.values():
        for method in METHODS:
            column = f"{method}_class"
            present = {m: row for m, row in item.items() if row[column] is not None}
            for a, b in ((a, b) for a in present for b in present if a < b):
                counted[method, a, b, present[a][column], present[b][column]] += 1
            for modality, row in present.items():
                if row["gold_class"] is not None:
                    counted[method, modality, "gold", row[column], row["gold_class"]] += 1
    schema = pa.schema([(name, pa.string()) for name in ("item_id", "modality", "base_class", "pairwise_class",
                                                         "refined_class", "gold_class")])
    labels = pa.Table.from_pylist(rows, schema).append_column("refined_confidence", pa.nulls(len(rows), pa.float32()))
    counts = MetricCounts(names)
    counts.add(labels, item_positions(labels), pa.table({name: pa.array([], pa.string()) for name in ("item_id", "label", "gold_class")})
               .append_column("confidence", pa.array([], pa.float32())))
    got = {(r["method"], r["modality_a"], r["modality_b"], r["pred"], r["ref"]): r["n"]
           for r in counts.tables()[0].to_pylist()}
    assert got == counted
