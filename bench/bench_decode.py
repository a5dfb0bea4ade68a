"""Decode a catalog's Parquet partitions on a pool of threads, nothing else: the read floor per allocator.

    ARROW_DEFAULT_MEMORY_POOL=jemalloc .venv/bin/python bench/bench_decode.py --threads 2 \
        bench/data/synthetic-1000000/items/*.parquet

Each row group is one task, read as the label pass reads it (memory-mapped, 8,192-row batches, on the task's
own thread). Prints the pool, the wall and CPU seconds of each repetition. Set ARROW_DEFAULT_MEMORY_POOL
(jemalloc, mimalloc or system) in the environment: pyarrow reads it as it loads.
"""

from __future__ import annotations

import argparse
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq


def decode(path: str, row_group: int) -> int:
    rows = 0
    for batch in pq.ParquetFile(path, memory_map=True).iter_batches(batch_size=8192, row_groups=[row_group],
                                                                    use_threads=False):
        rows += batch.num_rows
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    tasks = [(path, g) for path in sorted(args.files) for g in range(pq.ParquetFile(path).num_row_groups)]
    for _ in range(args.repeat):
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            rows = sum(pool.map(lambda task: decode(*task), tasks))
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        print(f"{pa.default_memory_pool().backend_name}, {args.threads} threads: {rows:,} rows in "
              f"{time.perf_counter() - began:.2f} s, CPU {cpu:.1f} s", flush=True)


if __name__ == "__main__":
    main()
