"""The labelling pass alone, outside Prefect: a stored model's ``label_partition`` over every partition.

    ARROW_DEFAULT_MEMORY_POOL=jemalloc DO_NOT_TRACK=1 .venv/bin/python bench/bench_label_pass.py \
        --items 'bench/data/synthetic-1000000/items/*.parquet' --classes bench/data/synthetic-1000000/classes.parquet \
        --db DB --gold-column label

DB holds the model (a full ``pairwise run`` of the same catalog and classes). The partitions (``--chunk-size``
rows) run on ``--threads`` threads with one BLAS thread each, as the flow runs them; the staged rows are
written to a run folder of DB's staging and removed after. Prints the wall and CPU seconds of each
repetition: the pass's floor without Prefect's task runs, events and progress (compare with the flow's
``pass2_s`` in runs.details), and the figure to compare two versions of the code by, in turns.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

from threadpoolctl import threadpool_limits

from tasks.label import label_partition
from tasks.runs import check_stored_model
from tasks.sources import inspect_sources
from tasks.staging import Staging, prepare_staging


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", required=True)
    parser.add_argument("--classes", required=True)
    parser.add_argument("--db", required=True, help="a DuckDB file with a stored model for these sources")
    parser.add_argument("--gold-column")
    parser.add_argument("--model", default="latest")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    plan = inspect_sources(args.items, args.classes, db=args.db, gold_column=args.gold_column,
                           chunk_size=args.chunk_size)
    model = check_stored_model.fn(plan, args.classes, args.db, args.model)
    for repetition in range(args.repeat):
        prepare_staging(args.db)  # removing a run's folder removes an empty staging folder too
        staging = Staging.create(args.db, f"bench-label-pass-{repetition}")
        try:
            start, cpu = time.perf_counter(), time.process_time()
            with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(args.threads) as pool:
                parts = list(pool.map(lambda partition: label_partition.fn(
                    partition, plan, model["sealed"], model["seed"], staging, "bench-label-pass"), plan.partitions))
            print(f"{sum(part['n_labelled'] for part in parts):,} items in {len(parts)} partitions on "
                  f"{args.threads} threads: {time.perf_counter() - start:.2f} s wall, "
                  f"{time.process_time() - cpu:.2f} s CPU", flush=True)
        finally:
            staging.remove()


if __name__ == "__main__":
    main()
