"""Decode a catalog's Parquet partitions on a pool of threads, nothing else: the read floor per allocator.

    ARROW_DEFAULT_MEMORY_POOL=jemalloc .venv/bin/python bench/bench_decode.py --threads 2 \
        bench/data/synthetic-1000000/items/*.parquet

Each partition (``--chunk-size`` rows, as ``pairwise run`` plans them) is one task, read by the label pass's own
``read_partition`` on the task's thread. Prints the pool, the wall and CPU seconds of each repetition. Set
ARROW_DEFAULT_MEMORY_POOL (jemalloc, mimalloc or system) in the environment: pyarrow reads it as it loads.
"""

from __future__ import annotations

import argparse
import resource
import time
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.parquet as pq

from tasks.sources import Partition, plan_partitions, read_partition


def decode(partition: Partition, columns: list[str]) -> int:
    return sum(batch.num_rows for batch in read_partition(partition, columns))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=50_000)
    args = parser.parse_args()
    files = sorted(args.files)
    columns = pq.ParquetFile(files[0]).schema_arrow.names
    partitions = list(plan_partitions(files, args.chunk_size))
    for _ in range(args.repeat):
        before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            rows = sum(pool.map(lambda partition: decode(partition, columns), partitions))
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
        print(f"{pa.default_memory_pool().backend_name}, {args.threads} threads: {rows:,} rows in "
              f"{time.perf_counter() - began:.2f} s, CPU {cpu:.1f} s", flush=True)


if __name__ == "__main__":
    main()
