"""Research (issue 23): how many PCA axes should the graph's points keep?

    PYTHONPATH=$PWD DO_NOT_TRACK=1 .venv/bin/python bench/research_graph_dims.py DATA [DATA ...] \
        [--dims 128 64 96] [--graph-k 20]

For each catalog folder (``items.parquet`` with a gold column ``label``, ``classes.parquet``) and each number
of axes, one product run (``pairwise run --gold-column label --graph-k K``) in a child process with
``tasks.graph.DIMS`` set to it, into a temporary DuckDB file. Printed per run: the refined label's gold accuracy
per view and the joint label's, on the tune half and the held-out half of the items
(``np.random.default_rng(0).random(n) < 0.5`` in the file's row order, as bench/research_graph.py splits them),
and the graph step's build and search seconds (``runs.details.graph``).

Fewer axes make the index smaller (4 bytes an item an axis) and its products cheaper; the labels decide.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
RUN = "import sys, tasks.graph as g; g.DIMS = int(sys.argv[1]); from flows.cli import main; sys.exit(main(sys.argv[2:]))"
ACCURACY = """
    SELECT modality, h.tune, avg((refined_class = gold_class)::INT) FROM item_labels JOIN halves h USING (item_id)
    WHERE gold_class IS NOT NULL GROUP BY ALL
    UNION ALL
    SELECT 'joint', h.tune, avg((label = gold_class)::INT) FROM joint_labels JOIN halves h USING (item_id)
    WHERE gold_class IS NOT NULL GROUP BY ALL
    ORDER BY 1, 2"""


def measure(data: Path, dims: int, graph_k: int, folder: Path) -> tuple[dict[str, dict[str, float]], dict]:
    """One product run with the graph's points at ``dims`` axes: accuracy per view and half, and the graph's
    details."""
    db = folder / f"{data.name}-{dims}.duckdb"
    run = subprocess.run([sys.executable, "-c", RUN, str(dims), "run", "--items", str(data / "items.parquet"),
                          "--classes", str(data / "classes.parquet"), "--db", str(db), "--gold-column", "label",
                          "--graph-k", str(graph_k), "--run-id", f"dims{dims}", "--quiet"],
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    if run.returncode:
        sys.exit(f"{data.name} at {dims} axes failed: {run.stderr.strip().splitlines()[-1:]}")
    ids = pq.read_table(data / "items.parquet", columns=["item_id"]).column(0)
    halves = pa.table({"item_id": ids, "tune": np.random.default_rng(0).random(len(ids)) < 0.5})
    with duckdb.connect(str(db), read_only=True) as con:
        con.register("halves", halves)
        accuracy: dict[str, dict[str, float]] = {}
        for view, tune, value in con.execute(ACCURACY).fetchall():
            accuracy.setdefault(view, {})["tune" if tune else "held-out"] = value
        graph = json.loads(con.execute("SELECT details FROM runs").fetchone()[0])["graph"]
    return accuracy, graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--dims", nargs="+", type=int, default=[128, 64, 96])
    parser.add_argument("--graph-k", type=int, default=20)
    args = parser.parse_args()
    print("| catalog | axes | views' and joint gold accuracy, tune / held-out | build s | search s |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for data in args.data:
            for dims in args.dims:
                accuracy, graph = measure(data, dims, args.graph_k, Path(folder))
                views = ", ".join(f"{view} {halves['tune']:.4f} / {halves['held-out']:.4f}"
                                  for view, halves in sorted(accuracy.items()))
                print(f"| {data.name} | {dims} | {views} | {graph['build_s']:.2f} | {graph['search_s']:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
