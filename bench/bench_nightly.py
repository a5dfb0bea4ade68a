"""The nightly cycle (full run, stored-model relabel, incremental nights) against a plain cosine job, in one run.

    cd <repo> && DO_NOT_TRACK=1 .venv/bin/python bench/bench_nightly.py --synthetic 1000000

(from a worktree whose code is to be measured, with another checkout's venv:
``cd <worktree> && PYTHONPATH=$PWD DO_NOT_TRACK=1 <venv>/bin/python bench/bench_nightly.py --synthetic 1000000
--catalog <checkout>/bench/data/synthetic-1000000``;
every step runs ``python -m flows.cli run`` with this file's checkout first on PYTHONPATH.)

The catalog is bench_pipeline.py's cached synthetic one (N items × two 768-d float32 modalities, 13 classes,
files of 100,000 rows, gold column ``label``), never modified: its files are symlinked into a temporary
folder, so the night's new file can be added beside them. For each size (the first file alone, 100k items,
then all N) every step is its own process, timed by wall clock, peak RSS from ``/usr/bin/time -v``:

1. cosine peer: this file's ``--peer`` mode, a plain zero-shot cosine job that streams the catalog once
   (pyarrow record batches of READ_BATCH_ROWS; per modality: unit rows, ``x @ classes.T`` in float32 BLAS,
   argmax, one BLAS thread as in ``pairwise``) and writes item_id and one label per modality to Parquet;
   the same allocator settings as ``pairwise`` (flows.cli.ALLOCATOR_DEFAULTS);
2. full run: ``pairwise run --gold-column label --chunk-size 50000`` into a fresh DuckDB file (fits and
   stores model M);
3. stored-model relabel: the same with ``--model latest`` (no fit, one pass);
4. incremental night, 1% new: a further file of N/100 new items (a seeded sample of the catalog's rows under
   new ids) beside the others, ``--model latest --incremental``;
5. incremental night, nothing new: the same files again.

Steps 1 and 3 run ``--repeat`` times (3), in turns after step 2, and the run with the median wall time of each
is reported: the machine is shared (one peer run took 12.2 s and another 15.9 s in one session).

The catalog's files are read once before the first step, so every step finds them in the page cache.

Phase timings come from ``runs.details`` ("timings", and "night" for incremental runs); "other" is the rest of
the wall time: Python and Prefect start-up, validation, the commit, the reports. "load" is the machine's
1-minute load average as the step started (the machine may be shared).

By default the benchmark starts a ``prefect server`` of its own (PREFECT_HOME in the temporary folder) and
points every run at it, as a deployment's worker runs; ``--temporary-server`` lets each run start Prefect's
temporary server instead (10-20 s more per run). ``--changed-column`` also times step 4 with
``--changed-column version``: it writes versioned copies of the N items (about 6 GB at 1M) first.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("stage", "pass1", "fit", "refine", "fit_review", "plan_night", "pass2", "metrics", "review")
TARGETS = {"relabel / peer": 1.3, "incremental 1% / full": 0.25, "peak RSS MiB": 4096}


def peer(items: list[str], classes: str, out: str) -> None:
    """Step 1, in its own process: one streaming pass of plain zero-shot cosine labels."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pairwise_core import embeddings
    from tasks.sources import READ_BATCH_ROWS


    class_table = pq.read_table(classes)
    names = np.asarray(class_table.column("class_name").to_pylist(), dtype=object)
    schema = pq.ParquetFile(items[0]).schema_arrow
    modalities = [n for n in schema.names if n.endswith("_embedding") and n in class_table.column_names]
    unit = {}
    for column in modalities:
        matrix = embeddings(class_table, column)
        unit[column] = np.ascontiguousarray(matrix / np.linalg.norm(matrix, axis=1, keepdims=True), dtype=np.float32)
    out_schema = pa.schema([("item_id", pa.string())]
                           + [(m.removesuffix("_embedding") + "_label", pa.string()) for m in modalities])
    with pq.ParquetWriter(out, out_schema) as writer:
        for path in items:
            for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_BATCH_ROWS,
                                                           columns=["item_id", *modalities]):
                table = pa.Table.from_batches([batch])
                labels = []
                for column in modalities:
                    x = embeddings(table, column)
                    norms = np.linalg.norm(x, axis=1, keepdims=True)
                    x = x / np.maximum(norms, np.float32(1e-12))
                    labels.append(pa.array(names[np.argmax(x @ unit[column].T, axis=1)], pa.string()))
                writer.write_table(pa.Table.from_arrays([table.column("item_id"), *labels], schema=out_schema))


def main() -> None:
    import json
    import re
    import shutil
    import subprocess
    import tempfile
    import time

    import duckdb
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from bench_pipeline import (
        synthetic,  # its cached catalog (importing it also tunes this process's allocator)
    )

    from flows.cli import ALLOCATOR_DEFAULTS
    from tasks.environment import blas_summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synthetic", type=int, default=1_000_000, metavar="N",
                        help="the cached synthetic catalog of N items (bench_pipeline.py's)")
    parser.add_argument("--catalog", metavar="DIR",
                        help="a folder holding that cached catalog (items/*.parquet, classes.parquet), e.g. another "
                             "checkout's bench/data/synthetic-1000000; default: bench/data's, generated if missing")
    parser.add_argument("--small", type=int, default=100_000, metavar="N",
                        help="also run the cycle on the catalog's first files, this many items (0: not)")
    parser.add_argument("--chunk-size", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="run the peer and the relabel R times, in turns, and report the median run of each")
    parser.add_argument("--temporary-server", action="store_true",
                        help="no Prefect server of the benchmark's own: each run starts Prefect's temporary one")
    parser.add_argument("--changed-column", action="store_true",
                        help="also time the 1%% night with --changed-column (writes versioned copies first)")
    parser.add_argument("--workdir", help="parent of the temporary folder (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    if args.catalog:
        items_glob, classes = str(Path(args.catalog) / "items" / "*.parquet"), str(Path(args.catalog) / "classes.parquet")
    else:
        items_glob, classes = synthetic(args.synthetic)
    catalog, rows_in = [], 0
    for path in sorted(Path(items_glob).parent.glob("*.parquet")):  # a larger --catalog: its first N items' files
        if rows_in < args.synthetic:
            catalog.append(path)
            rows_in += pq.ParquetFile(path).metadata.num_rows
    work = Path(tempfile.mkdtemp(prefix="bench-nightly-", dir=args.workdir))
    timer = ["/usr/bin/time", "-v"]

    env = {k: v for k, v in os.environ.items() if not k.startswith("MIMALLOC_")} | ALLOCATOR_DEFAULTS
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    env["DO_NOT_TRACK"] = "1"
    server = None
    if not args.temporary_server:
        server, env = start_server(work, env)
    prefect = "temporary server per run" if server is None else "a running server (started by the benchmark)"

    def step(command: list[str]) -> tuple[float, float, float]:
        """Wall seconds, peak RSS in MiB, and the load average as it started."""
        load = os.getloadavg()[0]
        start = time.perf_counter()
        result = subprocess.run(timer + command, capture_output=True, text=True, env=env, cwd=ROOT, check=False)
        wall = time.perf_counter() - start
        if result.returncode != 0:
            sys.exit(f"failed: {' '.join(command)}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
        rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)
        return wall, int(rss.group(1)) / 1024, load

    def pairwise(files: str, db: Path, run_id: str, *options: str) -> tuple[float, float, dict]:
        wall, rss, load = step([sys.executable, "-m", "flows.cli", "run", "--items", files, "--classes", classes,
                          "--db", str(db), "--gold-column", "label", "--chunk-size", str(args.chunk_size),
                          "--run-id", run_id, "--quiet", *options])
        with duckdb.connect(str(db), read_only=True) as con:
            (details,) = con.execute("SELECT details FROM runs WHERE run_id = ? AND status = 'succeeded' "
                                     "ORDER BY finished_at DESC LIMIT 1", [run_id]).fetchone()
        return wall, rss, json.loads(details), load

    def new_items(sources: list[Path], n: int, out: Path, seed: int = 21) -> None:
        """n new items: a seeded sample of the sources' rows (one row group per file) under new ids."""
        rng = np.random.default_rng(seed)
        shares = np.full(len(sources), n // len(sources))
        shares[: n % len(sources)] += 1
        tables = []
        for path, share in zip(sources, shares):
            file = pq.ParquetFile(path)
            group = file.read_row_group(int(rng.integers(file.num_row_groups)))
            tables.append(group.take(np.sort(rng.choice(group.num_rows, int(share), replace=False))))
        table = pa.concat_tables(tables)
        table = table.set_column(0, "item_id", pc.binary_join_element_wise(table.column("item_id"), "new", "-"))
        pq.write_table(table, out, row_group_size=50_000)

    def versioned(sources: list[Path], folder: Path) -> None:
        """Copies of the files with a constant `version` column (for --changed-column)."""
        folder.mkdir()
        for path in sources:
            file = pq.ParquetFile(path)
            with pq.ParquetWriter(folder / path.name, file.schema_arrow.append(pa.field("version", pa.int64()))) \
                    as writer:
                for g in range(file.num_row_groups):
                    group = file.read_row_group(g)
                    writer.write_table(group.append_column("version", pa.array(np.ones(group.num_rows, np.int64))))

    def cycle(n_files: int) -> dict:
        sources = catalog[:n_files]
        n_items = sum(pq.ParquetFile(p).metadata.num_rows for p in sources)
        folder = work / f"items-{n_items}"
        folder.mkdir()
        for path in sources:
            (folder / path.name).symlink_to(path)
        files, db = str(folder / "*.parquet"), work / f"nightly-{n_items}.duckdb"
        warm_page_cache(sources)
        peer_command = [sys.executable, str(Path(__file__).resolve()), "--peer", str(work / f"peer-{n_items}.parquet"),
                        classes, *map(str, sources)]
        full = pairwise(files, db, "full")
        peers, relabels = [], []
        for repetition in range(args.repeat):  # taken in turns, so that both see the same state of the machine
            wall, rss, load = step(peer_command)
            peers.append((wall, rss, None, load))
            relabels.append(pairwise(files, db, f"relabel-{repetition}", "--model", "latest"))
        rows = {"cosine peer": median_run(peers), "full run": full, "stored-model relabel": median_run(relabels)}
        if args.repeat > 1:
            print(f"[{n_items:,} items, wall s of each repetition: cosine peer "
                  f"{', '.join(f'{r[0]:.1f}' for r in peers)}; stored-model relabel "
                  f"{', '.join(f'{r[0]:.1f}' for r in relabels)}]", flush=True)
        new_items(sources, n_items // 100, folder / "part-new.parquet")
        rows["incremental, 1% new"] = pairwise(files, db, "night-1pct", "--model", "latest", "--incremental")
        rows["incremental, nothing new"] = pairwise(files, db, "night-0", "--model", "latest", "--incremental")
        if args.changed_column:
            vfolder = work / f"versioned-{n_items}"
            start = time.perf_counter()
            versioned(sources, vfolder)
            print(f"[{n_items:,} items: versioned copies written in {time.perf_counter() - start:.1f} s]", flush=True)
            vfiles = str(vfolder / "*.parquet")
            # the first night with the column records every item's version (they all count as changed)
            pairwise(vfiles, db, "night-versions", "--model", "latest", "--incremental", "--changed-column", "version")
            new_items(sources, n_items // 100, vfolder / "part-new.parquet", seed=2121)
            table = pq.read_table(vfolder / "part-new.parquet")
            pq.write_table(table.append_column("version", pa.array(np.ones(table.num_rows, np.int64))),
                           vfolder / "part-new.parquet", row_group_size=50_000)
            rows["incremental, 1% new, --changed-column"] = pairwise(
                vfiles, db, "night-1pct-version", "--model", "latest", "--incremental", "--changed-column", "version")
            shutil.rmtree(vfolder)
        report(n_items, rows)
        return rows

    def report(n_items: int, rows: dict) -> None:
        peer_wall, full_wall = rows["cosine peer"][0], rows["full run"][0]
        print(f"\n{n_items:,} items × 2 × 768-d, 13 classes, gold column; Prefect: {prefect}; {blas_summary()}\n")
        print("| step | wall s | × peer | × full run | peak RSS MiB | load | phases (runs.details.timings, s) | night |")
        print("|---|---|---|---|---|---|---|---|")
        for name, (wall, rss, details, load) in rows.items():
            phases = night = ""
            if details:
                timings = details["timings"]
                order = {phase: i for i, phase in enumerate(PHASES)}
                phases = ", ".join(f"{k.removesuffix('_s')} {timings[k]:.1f}"
                                   for k in sorted(timings, key=lambda k: order.get(k.removesuffix("_s"), 99)))
                phases += f"; other {wall - sum(timings.values()):.1f}"
                if details.get("night"):
                    night = ", ".join(f"{k} {v:,}" for k, v in details["night"].items())
            print(f"| {name} | {wall:.1f} | {wall / peer_wall:.2f} | {wall / full_wall:.2f} | {rss:,.0f} | {load:.1f} "
                  f"| {phases} | {night} |", flush=True)

    try:
        results = {}
        if args.small and args.small < args.synthetic:
            results["small"] = cycle(max(1, args.small // 100_000))
        results["large"] = cycle(len(catalog))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    large = results["large"]
    checks = [
        ("relabel / peer", large["stored-model relabel"][0] / large["cosine peer"][0], TARGETS["relabel / peer"]),
        ("incremental 1% / full", large["incremental, 1% new"][0] / large["full run"][0],
         TARGETS["incremental 1% / full"]),
        ("peak RSS MiB", max(r[1] for res in results.values() for r in res.values()), TARGETS["peak RSS MiB"]),
    ]
    print(f"\ntargets at {args.synthetic:,} items:")
    for name, value, target in checks:
        print(f"  {name}: {value:,.2f} (target ≤ {target:,}): {'met' if value <= target else 'MISSED'}")
    if "small" in results:
        print(f"\npeak RSS, {args.small:,} against {args.synthetic:,} items (MiB):")
        for name, (_, rss, _, _) in results["small"].items():
            if name in large:
                print(f"  {name}: {rss:,.0f} / {large[name][1]:,.0f} = {large[name][1] / rss:.2f}")


def median_run(runs: list[tuple]) -> tuple:
    """The run with the median wall time (the lower middle one of an even number): a real run's figures."""
    return sorted(runs, key=lambda run: run[0])[(len(runs) - 1) // 2]


def warm_page_cache(paths: list[Path]) -> None:
    """Read the files once, so that the first step does not pay for the disk and the later steps
    do not gain from it: a cold cache once made the peer 27.6 s against 12.7 s warm."""
    for path in paths:
        with path.open("rb") as file:
            while file.read(1 << 24):
                pass


def start_server(work: Path, env: dict[str, str]):
    """A `prefect server start` of the benchmark's own; the runs' environment pointing at it."""
    import json
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    home = work / "prefect-home"
    home.mkdir()
    env = {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
                json.loads(response.read())
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                sys.exit(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    return server, {**env, "PREFECT_API_URL": url}


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # this checkout's code, whatever the venv has installed
    if len(sys.argv) > 1 and sys.argv[1] == "--peer":  # step 1's own process: nothing else imported
        # one BLAS thread, as `pairwise run` limits each task's (set before numpy loads)
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
        peer(sys.argv[4:], sys.argv[3], sys.argv[2])
    else:
        main()
