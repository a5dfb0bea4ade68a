"""Base, pairwise and refined labels of real catalogs through the real `pairwise run` (README: results).

    .venv/bin/python bench/evaluate_refined.py bench/data/real bench/data/real-verbs [--calibration gold label-free]

Each catalog folder is one built by bench/build_real_catalog.py. Per catalog and calibration, one run
with the gold column; the table gives, per view and for the joint label, agreement between the views,
gold accuracy, weighted F1 and the ECE of the refined confidence, as the run wrote them in
agreement_metrics.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

METHODS = ("base", "pairwise", "refined")


def run(data: Path, calibration: str, db: Path) -> float:
    start = time.perf_counter()
    pairwise = str(Path(sys.executable).with_name("pairwise"))
    subprocess.run([pairwise, "run", "--items", str(data / "items.parquet"), "--classes", str(data / "classes.parquet"),
                    "--db", str(db), "--gold-column", "label", "--calibration", calibration],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def table(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        values = {(m, metric, a, b): v for m, metric, a, b, v in con.execute(
            "SELECT method, metric, modality_a, modality_b, value FROM agreement_metrics").fetchall()}
    views = sorted({a for _, metric, a, b in values if b == "gold" and a != "joint"})
    pair = next((a, b) for _, metric, a, b in values if metric == "agreement_f1_weighted")
    rows = [f"| method | agreement F1 ({pair[0]} vs {pair[1]}) | "
            + " | ".join(f"{v} acc | {v} F1w | {v} ECE" for v in [*views, "joint"]) + " |",
            "|---|---|" + "---|---|---|" * (len(views) + 1)]
    for method in METHODS:
        cells = [values.get((method, "agreement_f1_weighted", *pair))]
        for view in [*views, "joint"]:
            cells += [values.get((method, metric, view, "gold")) for metric in ("gold_accuracy", "gold_f1_weighted",
                                                                                 "gold_ece")]
        rows.append(f"| {method} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--calibration", nargs="+", default=["gold", "label-free"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            for calibration in args.calibration:
                db = Path(scratch) / f"{data.name}-{calibration}.duckdb"
                seconds = run(data, calibration, db)
                print(f"\n{data} (calibration {calibration}, {seconds:.1f} s)\n")
                print("\n".join(table(db)))


if __name__ == "__main__":
    main()
