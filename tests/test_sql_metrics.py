"""sql/metrics_*.sql compute exactly what pairwise_core.metrics computes, and the confusion counts a count item by
item gives, however the labels are split into files."""

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core import accuracy, agreement_f1, f1_weighted
from tasks.metrics import agreement_metrics


def sql_metrics(labels: pa.Table, tmp_path, n_parts: int = 1) -> dict[tuple, float]:
    """Write the labels as n_parts files (whole items per file) and compute the metrics from them."""
    items = sorted(set(labels.column("item_id").to_pylist()))
    paths = []
    for k in range(n_parts):
        mine = pa.array(items[k::n_parts], pa.string())
        part = labels.filter(pa.compute.is_in(labels.column("item_id"), value_set=mine))
        paths.append(str(tmp_path / f"labels-{k}.parquet"))
        pq.write_table(part, paths[-1])
    metrics, confusion = agreement_metrics(paths, "r")
    counted = Counter()  # the confusion counts, item by item
    by_item = {}
    for row in labels.to_pylist():
        by_item.setdefault(row["item_id"], {})[row["modality"]] = row
    for rows in by_item.values():
        for method in ("base", "pairwise"):
            for a, b in ((a, b) for a in rows for b in rows if a < b):
                counted[method, a, b, rows[a][f"{method}_class"], rows[b][f"{method}_class"]] += 1
            for modality, row in rows.items():
                if row["gold_class"] is not None:
                    counted[method, modality, "gold", row[f"{method}_class"], row["gold_class"]] += 1
    assert {(r["method"], r["modality_a"], r["modality_b"], r["pred"], r["ref"]): r["n"]
            for r in confusion.to_pylist()} == counted
    assert set(confusion.column("run_id").to_pylist()) <= {"r"}
    return {(r["method"], r["metric"], r["modality_a"], r["modality_b"]): r["value"] for r in metrics.to_pylist()}


@given(st.integers(0, 2**32 - 1), st.integers(1, 60), st.integers(1, 5), st.integers(1, 3))
def test_sql_metrics_equal_core_metrics(tmp_path_factory, seed, n, k, n_parts):
    rng = np.random.default_rng(seed)
    names = np.array([f"c{i}" for i in range(k)])
    image_base, image_pw, text_base, text_pw, gold = (rng.integers(0, k, n) for _ in range(5))
    ids = [f"i{i}" for i in range(n)]
    labels = pa.table({
        "item_id": ids * 2,
        "modality": ["image"] * n + ["text"] * n,
        "base_class": names[np.concatenate([image_base, text_base])],
        "pairwise_class": names[np.concatenate([image_pw, text_pw])],
        "gold_class": names[np.concatenate([gold, gold])],
    })
    got = sql_metrics(labels, tmp_path_factory.mktemp("m"), n_parts)
    assert got[("base", "agreement_f1_weighted", "image", "text")] == pytest.approx(agreement_f1(image_base, text_base))
    assert got[("pairwise", "agreement_f1_weighted", "image", "text")] == pytest.approx(agreement_f1(image_pw, text_pw))
    for modality, base, pw in (("image", image_base, image_pw), ("text", text_base, text_pw)):
        assert got[("base", "gold_accuracy", modality, "gold")] == pytest.approx(accuracy(gold, base))
        assert got[("pairwise", "gold_f1_weighted", modality, "gold")] == pytest.approx(f1_weighted(gold, pw))
    assert len(got) == 2 + 2 * 2 * 2


def test_no_gold_means_no_gold_metrics(tmp_path):
    labels = pa.table({
        "item_id": ["a", "b", "a", "b"], "modality": ["image", "image", "text", "text"],
        "base_class": ["x", "y", "x", "x"], "pairwise_class": ["x", "y", "x", "y"],
        "gold_class": pa.nulls(4, pa.string()),
    })
    got = sql_metrics(labels, tmp_path)
    assert set(got) == {("base", "agreement_f1_weighted", "image", "text"),
                        ("pairwise", "agreement_f1_weighted", "image", "text")}
    assert got[("pairwise", "agreement_f1_weighted", "image", "text")] == 1.0
