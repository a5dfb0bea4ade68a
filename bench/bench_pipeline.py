"""End-to-end `pairwise run` against the time pyarrow takes merely to read the same columns, in one run.

    .venv/bin/python bench/bench_pipeline.py --items bench/data/real/items.parquet \
        --classes bench/data/real/classes.parquet --gold-column label

The I/O floor streams the item_id, embedding and gold columns into numpy
float32 matrices (what the pipeline must do at least once). The pipeline time
is the wall time of the `pairwise run` process, Prefect's start-up included;
its peak RSS comes from the OS (/usr/bin/time -v when present).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core import embeddings
from tasks.sources import parquet_files


def read_floor(items: str, columns: list[str], batch_size: int) -> float:
    start = time.perf_counter()
    for path in parquet_files(items):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=columns):
            table = pa.Table.from_batches([batch])
            for column in columns:
                if column.endswith("_embedding"):
                    embeddings(table, column)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", required=True)
    parser.add_argument("--classes", required=True)
    parser.add_argument("--gold-column")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--db", help="output DuckDB file (default: a temporary one)")
    args = parser.parse_args()

    schema = pq.ParquetFile(parquet_files(args.items)[0]).schema_arrow
    class_columns = set(pq.ParquetFile(parquet_files(args.classes)[0]).schema_arrow.names)
    columns = ["item_id", *(n for n in schema.names if n.endswith("_embedding") and n in class_columns)]
    columns += [args.gold_column] if args.gold_column else []
    floor = read_floor(args.items, columns, args.chunk_size)

    workdir = Path(tempfile.mkdtemp())
    db = args.db or str(workdir / "bench.duckdb")
    command = [str(Path(sys.executable).with_name("pairwise")), "run", "--items", args.items, "--classes", args.classes,
               "--db", db, "--chunk-size", str(args.chunk_size)]
    command += ["--gold-column", args.gold_column] if args.gold_column else []
    timer = ["/usr/bin/time", "-v"] if shutil.which("/usr/bin/time") else []
    start = time.perf_counter()
    result = subprocess.run(timer + command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"pairwise run failed:\n{result.stderr}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
    n_items = pq.ParquetFile(parquet_files(args.items)[0]).metadata.num_rows if len(parquet_files(args.items)) == 1 \
        else sum(pq.ParquetFile(p).metadata.num_rows for p in parquet_files(args.items))
    print(result.stdout)
    print(f"items: {n_items}, columns read: {', '.join(columns)}")
    print(f"I/O floor (pyarrow read into numpy): {floor:7.2f} s")
    print(f"pairwise run (whole process):        {wall:7.2f} s   = {wall / floor:.2f}x the floor, "
          f"{n_items / wall:,.0f} items/s")
    if rss:
        print(f"peak RSS of pairwise run: {int(rss.group(1)) / 1024:,.0f} MiB")
    with duckdb.connect(db, read_only=True) as con:
        (details,) = con.execute(
            "SELECT details FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
    timings = json.loads(details)["timings"]
    inside = timings["pass1_s"] + timings["pass2_s"]
    print(f"inside the flow: pass 1 {timings['pass1_s']:.2f} s + pass 2 {timings['pass2_s']:.2f} s "
          f"= {inside:.2f} s = {inside / floor:.2f}x the floor (the rest is Prefect start-up, metrics and commit)")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
