"""An incremental night's plan alone at catalog scale: its time and peak memory, no embedding decoded.

    cd <repo> && DO_NOT_TRACK=1 .venv/bin/python bench/bench_night_plan.py --n-items 10000000

Writes, in a temporary folder, N item ids in --files Parquet files (with a 2-d embedding column, never read
by the plan), a classes file, and a DuckDB file whose catalog_items holds the same N items as live, labelled
by an earlier run. Then, in a child process (its own peak RSS): the sources' validation (``inspect_sources``,
which reads every id for the duplicate check) and ``plan_night`` with nothing new, changed or deleted, as a
night with a stored model plans. Prints the plan's time and the peak RSS before and after it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_catalog(folder: Path, n_items: int, n_files: int) -> str:
    """The items' files, the classes file and the DuckDB file; the DuckDB file's path."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tasks.store import connect

    (folder / "items").mkdir()
    per = -(-n_items // n_files)
    for f in range(n_files):
        ids = range(f * per, min((f + 1) * per, n_items))
        embedding = pa.FixedSizeListArray.from_arrays(pa.array(np.ones(2 * len(ids), np.float32)), 2)
        pq.write_table(pa.table({"item_id": pa.array([f"item-{i:09d}" for i in ids]), "image_embedding": embedding}),
                       folder / "items" / f"part-{f:04d}.parquet", row_group_size=50_000)
    pq.write_table(pa.table({"class_name": ["a", "b"],
                             "image_embedding": pa.array([[1.0, 0.0], [0.0, 1.0]], pa.list_(pa.float32()))}),
                   folder / "classes.parquet")
    db = folder / "catalog.duckdb"
    with connect(db) as con:
        con.execute("INSERT INTO catalog_items SELECT printf('item-%09d', range), 'a', 0.9, 'agreed', 'm0', 'r0', "
                    "now(), hash(range), NULL, NULL, NULL, NULL FROM range($n)", {"n": n_items})
    return str(db)


def plan(folder: str, chunk_size: int) -> None:
    """In the child process: validate, then plan the night."""
    import resource
    import time

    from tasks.night import plan_night
    from tasks.sources import inspect_sources
    from tasks.staging import Staging, prepare_staging

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    db = str(Path(folder) / "catalog.duckdb")
    sources = inspect_sources(str(Path(folder) / "items" / "*.parquet"), str(Path(folder) / "classes.parquet"),
                              db=db, gold_column=None, chunk_size=chunk_size)
    validated = peak()
    prepare_staging(db)
    start = time.perf_counter()
    night = plan_night.fn(sources, db, Staging.create(db, "bench-night-plan"), "bench-night-plan", None)
    print(f"{night.n_source:,} items: plan {time.perf_counter() - start:.1f} s; peak RSS after the validation "
          f"{validated:,.0f} MiB, after the plan {peak():,.0f} MiB; new {night.n_new:,}, deleted "
          f"{night.n_deleted:,}, {len(night.selections)} selections")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--chunk-size", type=int, default=500_000, help="rows per partition (whole row groups)")
    parser.add_argument("--plan", metavar="FOLDER", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.plan:
        plan(args.plan, args.chunk_size)
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-night-plan-"))
    try:
        write_catalog(folder, args.n_items, args.files)
        subprocess.run([sys.executable, __file__, "--plan", str(folder), "--chunk-size", str(args.chunk_size)],
                       check=True, cwd=ROOT)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
