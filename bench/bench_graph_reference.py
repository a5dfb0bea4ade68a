"""The graph built over a bounded reference (``--graph-reference``): gold accuracy and calibration on two
held-out halves of each catalog, against the graph over every item and against no graph.

    PYTHONPATH=. python bench/bench_graph_reference.py bench/data/real bench/data/real-verbs \
        [--shares 1 0.5 0.25 0.1] [--graph-k 20]

Per catalog, one whole-catalog `pairwise run --gold-column label` without the graph (`--graph-k 0`) and one
per share s with `--graph-k K --graph-reference ceil(s * items)`: s = 1 is the graph over every item (today's
labels); below, the graph is built over a seeded s of the items and every other item takes one step against
it. The product's default (100,000 items) is this at 10% of a 1M-item catalog, so the small shares stand for
large catalogs: a reference of a tenth of the WordNet nouns is 2,162 items, sparser neighbourhoods than any
1M catalog's default reference would have. Labels are scored on two halves of the items
(``np.random.default_rng(0).random(n) < 0.5`` in file order): refined accuracy per view, the joint label's
accuracy and its ECE (10 equal-width bins of the joint confidence), and the joint accuracy of the items
outside the reference alone (the run's `runs.details.graph.reference` items have the smallest keys).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_classes_scale import run


def ece(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    return float(sum(abs(right[which == b].mean() - confidence[which == b].mean()) * (which == b).sum()
                     for b in range(bins) if (which == b).any()) / len(confidence))


def scores(db: Path, items: pa.Table) -> dict[int, dict[str, float]]:
    """Per half: refined accuracy per view, joint accuracy and ECE."""
    half = np.random.default_rng(0).random(items.num_rows) < 0.5
    gold = pa.table({"item_id": items.column("item_id"), "gold": items.column("label"),
                     "half": pa.array(half.astype(np.int8))})
    with duckdb.connect(str(db), read_only=True) as con:
        con.register("gold_items", gold)
        views = con.execute("""
            SELECT g.half, l.modality, avg((l.refined_class = g.gold)::INT)
            FROM item_labels l JOIN gold_items g USING (item_id) GROUP BY ALL ORDER BY ALL""").fetchall()
        joint = con.execute("""
            SELECT g.half AS half, j.confidence AS confidence, (j.label = g.gold)::INT AS hit
            FROM joint_labels j JOIN gold_items g USING (item_id) WHERE j.label IS NOT NULL""").fetchnumpy()
    out: dict[int, dict[str, float]] = {0: {}, 1: {}}
    for h, view, accuracy in views:
        out[h][view] = accuracy
    for h in (0, 1):
        rows = joint["half"] == h
        out[h]["joint"] = float(joint["hit"][rows].mean())
        out[h]["ece"] = ece(joint["confidence"][rows].astype(np.float64), joint["hit"][rows])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--shares", nargs="+", type=float, default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--graph-k", type=int, default=20)
    args = parser.parse_args()
    print("| catalog | graph | reference items | half | refined per view | joint acc | joint ECE | graph s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            items = pq.read_table(data / "items.parquet", columns=["item_id", "label"])
            settings = [("off", ["--graph-k", "0"])] + [
                (f"{share:g}", ["--graph-k", str(args.graph_k), "--graph-reference",
                                str(max(2, math.ceil(share * items.num_rows)))]) for share in args.shares]
            for name, extra in settings:
                db = Path(scratch) / f"{data.name}-{name}.duckdb"
                run(str(data / "items.parquet"), str(data / "classes.parquet"), db, extra)
                with duckdb.connect(str(db), read_only=True) as con:
                    graph = json.loads(con.execute("SELECT details FROM runs").fetchone()[0]).get("graph") or {}
                for half, s in scores(db, items).items():
                    views = " / ".join(f"{s[v]:.4f}" for v in sorted(s) if v not in ("joint", "ece"))
                    print(f"| {data.name} | {name} | {graph.get('reference', '-')} | {half} | {views} | "
                          f"{s['joint']:.4f} | {s['ece']:.4f} | {graph.get('total_s', '-')} |", flush=True)


if __name__ == "__main__":
    main()
