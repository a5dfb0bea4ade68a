"""Per-phase cost of a full run as the number of classes grows, exact against pruned, with gold accuracy.

    PYTHONPATH=. python bench/bench_taxonomy.py bench/data/real-verbs bench/data/real \
        bench/data/taxonomy-nouns bench/data/taxonomy-nouns-d8 [--modes exact default]

Each catalog folder is one built by bench/build_real_catalog.py (gold column ``label``). Per catalog
and mode, one `pairwise run` (``python -m flows.cli run`` of this checkout) in a child process:
``exact`` plays every class (``--candidates K``), ``default`` takes the run's defaults (pruned to each
item's top candidates above ``PRUNE_ABOVE`` classes). The table gives each phase's seconds
(runs.details.timings) and its cost per item in microseconds, the child's peak RSS, and the gold
accuracy of the pairwise, refined (per view) and joint labels. Run the catalogs in one invocation, on an
otherwise quiet machine: compare the ratios between rows, not the absolute times.
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
import pyarrow.parquet as pq

PHASES = ("pass1", "fit", "refine", "fit_review", "pass2")


def run(data: Path, mode: str, db: Path) -> int:
    """Run the flow on ``data``; return the child's peak RSS in bytes."""
    n_classes = pq.read_metadata(data / "classes.parquet").num_rows
    extra = ["--candidates", str(n_classes)] if mode == "exact" else []
    child = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--items", str(data / "items.parquet"),
                              "--classes", str(data / "classes.parquet"), "--db", str(db), "--gold-column", "label",
                              "--quiet", *extra],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ | {"DO_NOT_TRACK": "1"})
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"{data} {mode}: the run failed\n{child.stderr.read().decode()}")
    return usage.ru_maxrss * 1024


def results(db: Path) -> tuple[int, dict[str, float], dict[str, float]]:
    """(items, timings, gold accuracy by 'method view') of the run in ``db``."""
    with duckdb.connect(str(db), read_only=True) as con:
        details, n_items = con.execute("SELECT details, n_items FROM runs").fetchone()
        accuracy = {f"{method} {view}": value for method, view, value in con.execute(
            "SELECT method, modality_a, value FROM agreement_metrics "
            "WHERE metric = 'gold_accuracy' AND modality_b = 'gold'").fetchall()}
    return n_items, json.loads(details)["timings"], accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--modes", nargs="+", default=["exact", "default"], choices=["exact", "default"])
    args = parser.parse_args()
    header = ("| catalog | K | mode | " + " | ".join(f"{p} s (µs/item)" for p in PHASES)
              + " | peak RSS GB | pairwise acc | refined acc | joint acc |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            n_classes = pq.read_metadata(data / "classes.parquet").num_rows
            for mode in args.modes:
                db = Path(scratch) / f"{data.name}-{mode}.duckdb"
                rss = run(data, mode, db)
                n_items, timings, accuracy = results(db)
                views = sorted({key.split()[1] for key in accuracy} - {"joint"})
                cells = [f"{timings[f'{p}_s']:.1f} ({timings[f'{p}_s'] / n_items * 1e6:.0f})" for p in PHASES]
                cells += [f"{rss / 1e9:.2f}",
                          " / ".join(f"{accuracy[f'pairwise {v}']:.3f}" for v in views),
                          " / ".join(f"{accuracy[f'refined {v}']:.3f}" for v in views),
                          f"{accuracy['refined joint']:.3f}"]
                print(f"| {data.name} | {n_classes} | {mode} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
