"""What validation's two column scans cost: unique item ids, and gold values against the class names.

    .venv/bin/python bench/bench_validation.py --items 'catalog/items/*.parquet' \
        --classes catalog/classes.parquet --gold-column label [--table-db catalog.duckdb --table items]
    .venv/bin/python bench/bench_validation.py --synthetic 1000000   # bench_pipeline.py's cached catalog

Both checks read one column of every item (item_id, then the gold column),
never an embedding, so they cost about the same whatever the embeddings'
width. Each is timed alone, then the whole of `inspect_sources`, three times
each in this process (the median is printed, and the min); with --table-db
the same checks over a DuckDB table holding the items.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from collections.abc import Callable

from bench_pipeline import synthetic
from tasks.sources import Source, _check_unique_ids, _gold_values, inspect_sources, parquet_files, read_table

REPEATS = 3


def timed(name: str, call: Callable[[], object]) -> None:
    seconds = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - start)
    print(f"{name:<44} median {statistics.median(seconds):6.3f} s   min {min(seconds):6.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items")
    parser.add_argument("--classes")
    parser.add_argument("--gold-column")
    parser.add_argument("--synthetic", type=int, metavar="N", help="bench_pipeline.py's cached catalog of N items")
    parser.add_argument("--table-db", help="a DuckDB file holding the items as --table, to time table:NAME too")
    parser.add_argument("--table", default="items")
    args = parser.parse_args()
    if args.synthetic:
        args.items, args.classes = synthetic(args.synthetic)
        args.gold_column = args.gold_column or "label"
    elif not (args.items and args.classes):
        parser.error("give --items and --classes, or --synthetic N")
    names = read_table(Source(args.classes), "", ["class_name"]).column("class_name").to_pylist()
    sources = [(Source(args.items), parquet_files(args.items), "")]
    if args.table_db:
        sources.append((Source(f"table:{args.table}"), [], args.table_db))
    for source, files, db in sources:
        print(f"{source.text}:")
        timed("unique item ids (item_id alone)", lambda: _check_unique_ids(source, files, db))
        if args.gold_column:
            timed(f"gold values ({args.gold_column} alone)",
                  lambda: _gold_values(source, files, db, args.gold_column, names))
        timed("inspect_sources, whole", lambda: inspect_sources(
            source.text, args.classes, db=db, gold_column=args.gold_column, chunk_size=50_000))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB")


if __name__ == "__main__":
    main()
