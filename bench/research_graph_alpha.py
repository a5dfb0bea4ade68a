"""Research (issue 23): the graph's alpha chosen per catalog on its given labels, against today's alpha 0.8.

The rule was built for the measurement and not adopted: ``product`` needs its code, commit 2e12999 (branch
h61-graph-alpha-code: ``tasks.graph.ALPHAS``, ``ALPHA_MARGIN``, ``pairwise_core.graph.choose_alphas``), e.g. in a
worktree of it with this script copied in. On code without ``tasks.graph.ALPHAS`` it stops.

    P=/work/main/.venv/bin/python
    export PYTHONPATH=$PWD DO_NOT_TRACK=1 PREFECT_HOME=/tmp/h61/prefect_home OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    $P bench/research_graph_alpha.py noisy /work/main/bench/data/real /tmp/h61/data/real-noisy10   # per catalog
    $P bench/research_graph_alpha.py product DATA... --db /tmp/h61/db --settings chosen guarded > out.md

``noisy``: a copy of a catalog whose ``label`` column has 10% of its labels flipped to another class, uniformly
(``review_noise.flip_labels``, kind 'uniform', ``np.random.default_rng(0)``), and the true label kept as the
column ``true_label``, which the run does not read; the classes file is linked.

``product``: a ``pairwise run --gold-column label --graph-k 20`` per catalog and setting, the product's code with
``tasks.graph``'s constants set in the child process (as research_graph_easy.py's ``--set``): ``today``
(``ALPHAS = [0.8]``: no choice, alpha 0.8) and each of ``--settings``: ``chosen`` (the grid: each posterior's
alpha chosen per fold on the given labels), ``guarded`` (the same with ``ALPHA_MARGIN = 2``). Each run's
labels are scored against the TRUE labels (``true_label`` where the catalog has it, else ``label``): accuracy of
each view's refined label and of the joint label, whole catalog and research_graph.py's halves
(``np.random.default_rng(0).random(n) < 0.5`` in the file's row order), and ECE (10 equal-width bins, the
product's ``gold_ece``) of their confidences, whole and held-out. Also the chosen alphas, the grid's agreement
with the given labels (``runs.details.graph``) and the graph step's timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from review_noise import flip_labels  # noqa: E402

from pairwise_core.metrics import expected_calibration_error  # noqa: E402

RUN_SET = ("import sys, json, tasks.graph as g; [setattr(g, k, v) for k, v in json.loads(sys.argv[1]).items()]; "
           "from flows.cli import main; sys.exit(main(sys.argv[2:]))")
GRID = [0.5, 0.8, 0.9, 0.95, 0.99]
# today: no choice (alpha 0.8); chosen: the rule as first defined; guarded: the same, the best alpha replacing 0.8
# only where it beats it by more than 2 standard errors of the paired difference (``choose_alphas``' margin)
SETTINGS = {"today": {"ALPHAS": [0.8]}, "chosen": {"ALPHAS": GRID}, "guarded": {"ALPHAS": GRID, "ALPHA_MARGIN": 2.0}}
VIEWS = ("title", "gloss", "joint")


def cmd_noisy(src: Path, dst: Path, fraction: float, seed: int) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    items = pq.read_table(src / "items.parquet")
    names = pq.read_table(src / "classes.parquet", columns=["class_name"]).column(0).to_pylist()
    index = {name: i for i, name in enumerate(names)}
    truth = np.array([index[v] for v in items.column("label").to_pylist()])
    noisy = flip_labels(truth, {}, len(names), "uniform", fraction, np.random.default_rng(seed))
    labels = pa.array(np.array(names, dtype=object)[noisy].tolist(), pa.string())
    items = items.set_column(items.schema.get_field_index("label"), "label", labels)
    items = items.append_column("true_label", pc.cast(pq.read_table(src / "items.parquet", columns=["label"])
                                                       .column(0), pa.string()))
    pq.write_table(items, dst / "items.parquet")
    link = dst / "classes.parquet"
    if not link.exists():
        link.symlink_to((src / "classes.parquet").resolve())
    print(f"{dst}: {int((noisy != truth).sum())} of {len(truth)} labels flipped")


def run(data: Path, setting: str, folder: Path, k: int) -> Path:
    db = folder / f"{data.name}-k{k}-{setting}.duckdb"
    if not db.exists():
        cmd = [sys.executable, "-c", RUN_SET, json.dumps(SETTINGS[setting]), "run", "--items",
               str(data / "items.parquet"), "--classes", str(data / "classes.parquet"), "--db", str(db),
               "--gold-column", "label", "--graph-k", str(k), "--run-id", setting, "--quiet"]
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
        if done.returncode:
            db.unlink(missing_ok=True)
            sys.exit(f"{data.name} {setting} failed: {done.stderr.strip().splitlines()[-3:]}")
        print(f"  ({data.name} {setting}: {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    return db


def scores(data: Path, db: Path) -> dict:
    """Per view and joint: accuracy (whole, tune, held-out) and ECE (whole, held-out) against the true labels."""
    columns = pq.read_schema(data / "items.parquet").names
    truth = "true_label" if "true_label" in columns else "label"
    table = pq.read_table(data / "items.parquet", columns=["item_id", truth])
    n = table.num_rows
    truths = pa.table({"item_id": table.column("item_id"), "truth": table.column(truth),
                       "tune": np.random.default_rng(0).random(n) < 0.5})
    out: dict = {}
    with duckdb.connect(str(db), read_only=True) as con:
        con.register("truths", truths)
        for view in VIEWS:
            sql = ("SELECT (label = truth)::INT, confidence, tune FROM joint_labels JOIN truths USING (item_id)"
                   if view == "joint" else
                   "SELECT (refined_class = truth)::INT, refined_confidence, tune FROM item_labels JOIN truths "
                   f"USING (item_id) WHERE modality = '{view}'")
            hit, conf, tune = (np.asarray(c) for c in zip(*con.execute(sql).fetchall(), strict=True))
            hit, conf, tune = hit.astype(float), np.minimum(conf.astype(float), 1.0), tune.astype(bool)
            out[view] = {"acc": hit.mean(), "tune": hit[tune].mean(), "held": hit[~tune].mean(),
                         "ece": expected_calibration_error(hit, conf), "ece_held": expected_calibration_error(
                             hit[~tune], conf[~tune])}
        out["product_ece"] = dict(con.execute(
            "SELECT modality_a, value FROM agreement_metrics WHERE metric = 'gold_ece'").fetchall())
        out["graph"] = json.loads(con.execute("SELECT details FROM runs").fetchone()[0])["graph"]
    return out


def cmd_product(datas: list[Path], folder: Path, k: int, compared: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for data in datas:
        got = {s: scores(data, run(data, s, folder, k)) for s in ["today", *compared]}
        rows.append((data.name, got))
        for s in compared:
            g = got[s]["graph"]
            print(f"\n{data.name}, {s}: alpha {g['alpha']} ({g['alpha_choice']}); agreement with the given labels "
                  f"on {g['alpha_rows']} items {g['alpha_agreement']}; graph step today "
                  f"{got['today']['graph']['total_s']} s, {s} {g['total_s']} s (choice {g['alpha_s']} s)", flush=True)
    cell = lambda m: f"{m['acc']:.4f} / {m['tune']:.4f} / {m['held']:.4f} ({m['ece']:.3f} / {m['ece_held']:.3f})"  # noqa: E731
    for s in compared:
        print(f"\n### {s} against today (accuracy and ECE against the true labels)\n")
        print(f"| catalog | view | today: acc whole / tune / held-out (ECE whole / held-out) | {s} alpha per fold | "
              f"{s}: acc whole / tune / held-out (ECE whole / held-out) | gain whole / held-out (points) |")
        print("|---|---|---|---|---|---|")
        for name, got in rows:
            g = got[s]["graph"]
            for i, view in enumerate(VIEWS):
                folds = g["alpha"]["joint" if view == "joint" else str(i)]
                alpha = f"{folds[0]:g}" if len(set(folds)) == 1 else "/".join(f"{a:g}" for a in folds)
                t, c = got["today"][view], got[s][view]
                print(f"| {name if i == 0 else ''} | {view} | {cell(t)} | {alpha} | {cell(c)} | "
                      f"{100 * (c['acc'] - t['acc']):+.2f} / {100 * (c['held'] - t['held']):+.2f} |")
        for view in VIEWS:
            gains = [(name, 100 * (got[s][view]["acc"] - got["today"][view]["acc"]),
                      100 * (got[s][view]["held"] - got["today"][view]["held"])) for name, got in rows]
            print(f"\n{view} gain (points), whole / held-out: "
                  + "; ".join(f"{name} {whole:+.2f} / {held:+.2f}" for name, whole, held in gains)
                  + f". Worst {min(min(w, h) for _, w, h in gains):+.2f}; mean {np.mean([w for _, w, _ in gains]):+.2f}"
                  f" / {np.mean([h for _, _, h in gains]):+.2f}")
        print(f"\n(the product's own joint gold_ece, against the given labels, today / {s}: "
              + "; ".join(f"{name} {got['today']['product_ece'].get('joint', float('nan')):.3f} / "
                          f"{got[s]['product_ece'].get('joint', float('nan')):.3f}" for name, got in rows) + ")")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    noisy = sub.add_parser("noisy")
    noisy.add_argument("src", type=Path)
    noisy.add_argument("dst", type=Path)
    noisy.add_argument("--fraction", type=float, default=0.1)
    noisy.add_argument("--seed", type=int, default=0)
    product = sub.add_parser("product")
    product.add_argument("data", nargs="+", type=Path)
    product.add_argument("--db", type=Path, default=Path("/tmp/h61/db"))
    product.add_argument("--graph-k", type=int, default=20)
    product.add_argument("--settings", nargs="+", default=["chosen"], choices=[s for s in SETTINGS if s != "today"])
    args = ap.parse_args()
    if args.cmd == "noisy":
        cmd_noisy(args.src, args.dst, args.fraction, args.seed)
    else:
        import tasks.graph

        if not hasattr(tasks.graph, "ALPHAS"):
            sys.exit("tasks.graph has no ALPHAS: run this with the rule's code (commit 2e12999, branch "
                     "h61-graph-alpha-code)")
        cmd_product(args.data, args.db, args.graph_k, args.settings)


if __name__ == "__main__":
    main()
