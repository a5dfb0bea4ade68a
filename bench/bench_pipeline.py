"""End-to-end `pairwise run` against the time pyarrow takes merely to read the same columns, in one run.

    .venv/bin/python bench/bench_pipeline.py --items bench/data/real/items.parquet \
        --classes bench/data/real/classes.parquet --gold-column label
    .venv/bin/python bench/bench_pipeline.py --synthetic 1000000

--synthetic N generates (once, cached under bench/data/) a synthetic catalog
of N items with two 768-d float32 modalities and 13 classes (--n-classes K
for more), as Parquet files of 100,000 rows in row groups of 50,000, and
benchmarks that.

The I/O floor streams the item_id, embedding and gold columns into numpy
float32 matrices (what the pipeline must do at least once). The pipeline time
is the wall time of the `pairwise run` process, Prefect's start-up included;
its peak RSS comes from the OS (/usr/bin/time -v when present).
"""

from __future__ import annotations

from flows.cli import tune_allocator

# The floor reads with `pairwise run`'s allocator (jemalloc on Linux), the fastest to decode here on one
# thread too (the 1M catalog: 6.8 s against 7.3-8.1 s with mimalloc never returning memory): set before
# pyarrow loads.
tune_allocator()

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core import Modality, embeddings, iter_catalog
from tasks.sources import READ_BATCH_ROWS, parquet_files


def read_floor(items: str, columns: list[str]) -> float:
    """Stream the columns into numpy, in the batch size that reads fastest here (the pipeline's)."""
    start = time.perf_counter()
    for path in parquet_files(items):
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
            table = pa.Table.from_batches([batch])
            for column in columns:
                if column.endswith("_embedding"):
                    embeddings(table, column)
    return time.perf_counter() - start


def synthetic(n_items: int, n_classes: int = 13) -> tuple[str, str]:
    """Paths of the cached synthetic catalog of n_items, generated chunk by chunk if missing."""
    root = Path(__file__).parent / "data" / (f"synthetic-{n_items}" + (f"-k{n_classes}" if n_classes != 13 else ""))
    items_dir, classes_path = root / "items", root / "classes.parquet"
    if not classes_path.exists():
        shutil.rmtree(root, ignore_errors=True)
        items_dir.mkdir(parents=True)
        modalities = (Modality("image", 768, 0.045), Modality("text", 768, 0.035))
        classes, chunks = iter_catalog(n_items, n_classes, modalities=modalities, seed=0)
        writer, rows, part = None, 0, 0
        for chunk in chunks:
            if writer is None or rows >= 100_000:
                if writer is not None:
                    writer.close()
                writer, rows = pq.ParquetWriter(items_dir / f"part-{part:04d}.parquet", chunk.schema), 0
                part += 1
            writer.write_table(chunk, row_group_size=50_000)
            rows += chunk.num_rows
        writer.close()
        pq.write_table(classes, classes_path)  # last: its presence marks a complete cache
    return str(items_dir / "*.parquet"), str(classes_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items")
    parser.add_argument("--classes")
    parser.add_argument("--synthetic", type=int, metavar="N", help="benchmark a cached synthetic catalog of N items")
    parser.add_argument("--n-classes", type=int, default=13, help="classes of the --synthetic catalog")
    parser.add_argument("--gold-column")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--db", help="output DuckDB file (default: a temporary one)")
    parser.add_argument("--pairwise-args", default="", help="more options for `pairwise run`, e.g. '--fit-fraction 0.2'")
    args = parser.parse_args()
    if args.synthetic:
        args.items, args.classes = synthetic(args.synthetic, args.n_classes)
        args.gold_column = args.gold_column or "label"
    elif not (args.items and args.classes):
        parser.error("give --items and --classes, or --synthetic N")

    schema = pq.ParquetFile(parquet_files(args.items)[0]).schema_arrow
    class_columns = set(pq.ParquetFile(parquet_files(args.classes)[0]).schema_arrow.names)
    columns = ["item_id", *(n for n in schema.names if n.endswith("_embedding") and n in class_columns)]
    columns += [args.gold_column] if args.gold_column else []
    # the first read in a fresh process pays for faulting memory in (as `pairwise run` does);
    # later reads reuse it: report both
    floor_cold = read_floor(args.items, columns)
    floor = min(read_floor(args.items, columns) for _ in range(2))

    workdir = Path(tempfile.mkdtemp())
    db = args.db or str(workdir / "bench.duckdb")
    command = [str(Path(sys.executable).with_name("pairwise")), "run", "--items", args.items, "--classes", args.classes,
               "--db", db, "--chunk-size", str(args.chunk_size)]
    command += ["--gold-column", args.gold_column] if args.gold_column else []
    command += shlex.split(args.pairwise_args)
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
    print(f"I/O floor (pyarrow read into numpy): {floor:7.2f} s warm (best of 2), {floor_cold:.2f} s cold "
          f"(first read in the process); ratios below are against the warm floor, "
          f"{wall / floor_cold:.2f}x against the cold one")
    print(f"pairwise run (whole process):        {wall:7.2f} s   = {wall / floor:.2f}x the floor, "
          f"{n_items / wall:,.0f} items/s")
    if rss:
        print(f"peak RSS of pairwise run: {int(rss.group(1)) / 1024:,.0f} MiB")
    with duckdb.connect(db, read_only=True) as con:
        (details,) = con.execute(
            "SELECT details FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
    timings = json.loads(details)["timings"]
    inside = timings["pass1_s"] + timings["fit_s"] + timings["pass2_s"]
    print(f"inside the flow: pass 1 {timings['pass1_s']:.2f} s + fitting the masks {timings['fit_s']:.2f} s "
          f"+ pass 2 {timings['pass2_s']:.2f} s = {inside:.2f} s = {inside / floor:.2f}x the floor")
    rest = wall - sum(timings.values())
    print("phases: " + ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in timings.items())
          + f"; the other {rest:.2f} s are Prefect start-up, validation, the commit and the HTML report")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
