"""The graph's inductive step on a real catalog: a 90% day 0 with --graph-k, then a 10% night.

    export PYTHONPATH=$PWD DO_NOT_TRACK=1 PY=.venv/bin/python
    $PY bench/graph_night.py split bench/data/real /tmp/night          # d0/ (90%) and d1/ (d0's items + 10% new)
    R="$PY -m flows.cli run --classes bench/data/real/classes.parquet --gold-column label --quiet"
    NIGHT="--model latest --incremental --run-id night"
    $R --items '/tmp/night/d0/*.parquet' --db /tmp/night/a.duckdb --graph-k 20 --run-id day0
    cp /tmp/night/a.duckdb /tmp/night/b.duckdb; cp -r /tmp/night/a.duckdb.models /tmp/night/b.duckdb.models
    $R --items '/tmp/night/d1/*.parquet' $NIGHT --db /tmp/night/a.duckdb --graph-k 20   # the inductive step
    $R --items '/tmp/night/d1/*.parquet' $NIGHT --db /tmp/night/b.duckdb --graph-k 0    # no graph
    $R --items '/tmp/night/d1/*.parquet' --db /tmp/night/c.duckdb --graph-k 20 --run-id full20
    $PY bench/graph_night.py score /tmp/night a.duckdb:night b.duckdb:night c.duckdb:full20

The night's items are a seeded 10% of the catalog (numpy default_rng(0)); ``score`` gives their gold accuracy,
refined per view and joint, and the joint confidence's ECE (10 equal-width bins), in each run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq


def split(catalog: Path, out: Path) -> None:
    items = pq.read_table(catalog / "items.parquet")
    night = np.zeros(items.num_rows, bool)
    night[np.random.default_rng(0).permutation(items.num_rows)[: items.num_rows // 10]] = True
    for day in ("d0", "d1"):
        (out / day).mkdir(parents=True, exist_ok=True)
        pq.write_table(items.filter(~night), out / day / "items-0.parquet", row_group_size=5000)
    pq.write_table(items.filter(night), out / "d1" / "items-1.parquet", row_group_size=5000)
    print(f"day 0: {int((~night).sum()):,} items; night: {int(night.sum()):,} new items")


def score(out: Path, runs: list[str]) -> None:
    night = pq.read_table(out / "d1" / "items-1.parquet", columns=["item_id", "label"])
    for db, run_id in (run.split(":") for run in runs):
        with duckdb.connect(str(out / db), read_only=True) as con:
            con.register("night", night)
            views = con.execute("SELECT modality, avg((i.refined_class = n.label)::int) FROM item_labels i "
                                "JOIN night n USING (item_id) WHERE run_id = ? GROUP BY 1 ORDER BY 1",
                                [run_id]).fetchall()
            joint = con.execute("SELECT j.confidence, (j.label = n.label)::int AS hit FROM joint_labels j JOIN night n "
                                "USING (item_id) WHERE run_id = ?", [run_id]).fetchnumpy()
        confidence, hit = joint["confidence"].astype(np.float64), joint["hit"]
        bins = np.minimum((confidence * 10).astype(int), 9)
        ece = sum(abs(hit[bins == b].mean() - confidence[bins == b].mean()) * (bins == b).sum()
                  for b in range(10) if (bins == b).any()) / len(hit)
        shown = ", ".join(f"{modality} {accuracy:.4f}" for modality, accuracy in views)
        print(f"{db} {run_id}: {len(hit):,} night items; refined {shown}; joint {hit.mean():.4f}, ECE {ece:.4f}")


if __name__ == "__main__":
    if sys.argv[1] == "split":
        split(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        score(Path(sys.argv[2]), sys.argv[3:])
