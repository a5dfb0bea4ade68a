"""Per-phase cost of a whole run as the number of classes grows, on as many items, against the first catalog.

    PYTHONPATH=. python bench/bench_classes_scale.py --n-items 100000 --classes 13 100 500
    PYTHONPATH=. python bench/bench_classes_scale.py --n-items 1000000 --classes 500       # peak RSS at 1M
    PYTHONPATH=. python bench/bench_classes_scale.py --catalogs bench/data/real-verbs bench/data/real \
        bench/data/taxonomy-nouns bench/data/taxonomy-nouns-d8

Issue 22's targets: each phase's cost per item at K = 500 within 3x of K = 13, and a peak RSS under 4 GB,
flat from 100k to 1M items. Per catalog, one `pairwise run` (``python -m flows.cli run`` of this checkout,
``--gold-column label``, the run's defaults otherwise: pruned to each item's top candidates above
``PRUNE_ABOVE`` classes) in a child process. The table gives each phase (runs.details.timings) in
microseconds per item and as a ratio to the first row's, the child's wall time and peak RSS, the 1-minute
load average when the run started (the machine is shared: compare rows of one invocation), and the gold
accuracy of the joint label at the leaf and the parent level.

Synthetic catalogs are bench_pipeline.py's (``synthetic(N, K)``: 2 x 768-d, files of 100,000 items),
with a parent column added to a copy of the classes file (class i's parent is ``group-{i // 10}``), so the
parent level is run too. The generator seeds each 50,000-item chunk by its index alone, so the first
files of a larger cached catalog with the same K are the smaller catalog: N = 100k, 300k are read as the
first files of ``synthetic-1000000-k500`` when it exists. Catalogs with different K share the item count,
the seeds and the generator, not the items themselves (an item is drawn around its own class's mean).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_pipeline import synthetic

from pairwise_core.classifier import default_candidates
from tasks.environment import blas_summary

PHASES = ("stage", "pass1", "fit", "refine", "fit_review", "pass2", "metrics", "review")
FILE_ROWS = 100_000  # bench_pipeline.synthetic's rows per file
PARENT_GROUP = 10  # synthetic classes per parent


def synthetic_catalog(n_items: int, n_classes: int) -> tuple[str, str, str]:
    """(name, items glob, classes path with a parent column) of a synthetic catalog of n_items and n_classes."""
    data = Path(__file__).parent / "data"
    suffix = f"-k{n_classes}" if n_classes != 13 else ""
    larger = sorted((int(p.name.split("-")[1]), p) for p in data.glob(f"synthetic-*{suffix}")
                    if p.name == f"synthetic-{p.name.split('-')[1]}{suffix}" and (p / "classes.parquet").exists())
    usable = [(n, p) for n, p in larger if n >= n_items]
    if n_items % FILE_ROWS == 0 and usable:
        n_cached, root = usable[0]
        files = n_items // FILE_ROWS
        if n_cached == n_items:
            items = str(root / "items" / "*.parquet")
        elif files <= 10:
            items = str(root / "items" / f"part-000[0-{files - 1}].parquet")
        else:
            raise SystemExit(f"{n_items} items: no glob for the first {files} files of {root}")
    else:
        items, _ = synthetic(n_items, n_classes)
        root = Path(items).parent.parent
    classes = root / "classes-parents.parquet"
    if not classes.exists():
        table = pq.read_table(root / "classes.parquet")
        parents = pa.array([f"group-{i // PARENT_GROUP:02d}" for i in range(table.num_rows)], pa.string())
        pq.write_table(table.append_column("parent", parents), classes)
    return f"synthetic {n_items // 1000}k", items, str(classes)


def run(items: str, classes: str, db: Path, extra: list[str]) -> tuple[int, float]:
    """Run the flow; return the child's peak RSS in bytes and its wall time in seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--items", items, "--classes", classes,
                                  "--db", str(db), "--gold-column", "label", "--quiet", *extra],
                                 stdout=subprocess.DEVNULL, stderr=stderr, env=os.environ | {"DO_NOT_TRACK": "1"})
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode:
            stderr.seek(0)
            raise SystemExit(f"{items} {classes}: the run failed\n{stderr.read().decode()}")
    return usage.ru_maxrss * 1024, time.perf_counter() - start


def results(db: Path) -> tuple[int, int, dict, dict[str, float], dict]:
    """(items, classes, timings, gold accuracy by 'method view', params) of the run in ``db``."""
    with duckdb.connect(str(db), read_only=True) as con:
        details, n_items, n_classes, params = con.execute(
            "SELECT details, n_items, n_classes, params FROM runs").fetchone()
        accuracy = {f"{method} {view}": value for method, view, value in con.execute(
            "SELECT method, modality_a, value FROM agreement_metrics "
            "WHERE metric = 'gold_accuracy' AND modality_b = 'gold'").fetchall()}
    return n_items, n_classes, json.loads(details)["timings"], accuracy, json.loads(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=100_000, help="items of each synthetic catalog")
    parser.add_argument("--classes", type=int, nargs="*", default=[13, 100, 500], help="K of each synthetic catalog")
    parser.add_argument("--catalogs", type=Path, nargs="*", default=[],
                        help="folders of bench/build_real_catalog.py (items.parquet, classes.parquet), after the "
                             "synthetic ones")
    parser.add_argument("--pairwise-args", nargs="*", default=[], help="more options for every run")
    args = parser.parse_args()
    catalogs = [synthetic_catalog(args.n_items, k) for k in args.classes]
    catalogs += [(c.name, str(c / "items.parquet"), str(c / "classes.parquet")) for c in args.catalogs]
    print(f"{blas_summary()}\n")
    print("| catalog | items | K | candidates | load | " + " | ".join(f"{p} µs/item (×)" for p in PHASES)
          + " | flow µs/item (×) | wall s | peak RSS GiB | joint acc | joint parent acc |")
    print("|" + "---|" * (10 + len(PHASES)))
    first: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for index, (name, items, classes) in enumerate(catalogs):
            db = Path(scratch) / f"run-{index}.duckdb"
            load = os.getloadavg()[0]
            rss, wall = run(items, classes, db, args.pairwise_args)
            n_items, n_classes, timings, accuracy, params = results(db)
            per_item = {p: timings.get(f"{p}_s", 0.0) / n_items * 1e6 for p in PHASES}
            per_item["flow"] = sum(per_item.values())
            first = first or per_item
            cells = [f"{per_item[p]:.0f} ({per_item[p] / first[p]:.1f})" if first[p] else f"{per_item[p]:.0f}"
                     for p in (*PHASES, "flow")]
            told = params.get("core", params).get("candidates")  # None: the run's default, pruned above PRUNE_ABOVE
            candidates = told or f"{default_candidates(n_classes) or 'all'} (default)"
            parent = accuracy.get("refined_parent joint")
            print(f"| {name} | {n_items:,} | {n_classes} | {candidates} | {load:.1f} | " + " | ".join(cells)
                  + f" | {wall:.0f} | {rss / 2**30:.2f} | {accuracy['refined joint']:.3f} | "
                  + (f"{parent:.3f}" if parent is not None else "–") + " |", flush=True)


if __name__ == "__main__":
    main()
