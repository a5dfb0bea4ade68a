"""The one module that owns the DuckDB output file: schema, run lifecycle, atomic commit, reads.

Readers never see half a run: partitions are staged as Parquet files, and one
transaction deletes the run's old rows, bulk-loads the staged ones and flips
the run to 'succeeded'. Until then `current_labels` shows the previous
succeeded run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.sql import OUTPUT_TABLES, SCHEMA, statement


# Every DuckDB connection of a run works within this much memory and spills past it: peak RSS must stay
# flat in the catalog's size (bench/bench_pipeline.py), and DuckDB's default is 80% of the machine.
DUCKDB_MEMORY = {"memory_limit": "512MB"}


@contextmanager
def connect(db: str | Path, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection; the file, its folder and the schema are created on first write."""
    if not read_only:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(db), read_only=read_only, config=DUCKDB_MEMORY)
    try:
        if not read_only:
            for name in SCHEMA:
                con.execute(statement(name))
        yield con
    finally:
        con.close()


class RunLocked(RuntimeError):
    """Another run is writing the same DuckDB file."""


@contextmanager
def run_lock(db: str | Path) -> Iterator[None]:
    """Hold ``<db>.lock`` for a whole run: a second run on the same file fails at once, clearly.

    The OS releases the lock when the holder's process ends, however it ends
    (SIGKILL included), so a crash never leaves it behind.
    """
    path = Path(f"{db}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise RunLocked(f"another run is writing {db} ({holder}); try again when it has finished") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def start_run(db: str | Path, run_id: str, params: Mapping[str, Any]) -> list[str]:
    """Register the run as running; first mark failed the runs whose process on this host is gone.

    Returns the run ids so marked.
    """
    host, pid = socket.gethostname(), os.getpid()
    with connect(db) as con:
        stale = [
            (stale_id, stale_pid) for stale_id, stale_host, stale_pid in con.execute(statement("runs_running")).fetchall()
            if stale_host == host and stale_pid is not None and not _alive(stale_pid)
        ]
        for stale_id, stale_pid in stale:
            con.execute(statement("run_fail"), {
                "run_id": stale_id,
                "error": f"its process {stale_pid} on {host} died while it was running (found by run {run_id})",
            })
        con.execute(statement("run_start"), {
            "run_id": run_id,
            "params": json.dumps(params, sort_keys=True),
            "details": json.dumps({"owner": {"host": host, "pid": pid}}),
        })
    return [stale_id for stale_id, _ in stale]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def fail_run(db: str | Path, run_id: str, error: str) -> None:
    with connect(db) as con:
        con.execute(statement("run_fail"), {"run_id": run_id, "error": error})


def commit_run(db: str | Path, run_id: str, staged: Mapping[str, list[str]], summary: Mapping[str, Any]) -> None:
    """Replace the run's rows by the staged Parquet parts and mark it succeeded, in one transaction."""
    with connect(db) as con:
        # rows carry their order in columns (rank, item_id): letting DuckDB insert in any order
        # loads on every core (1M items: 3.4 s -> 2.1 s for the labels and issues)
        con.execute("SET preserve_insertion_order = false")
        con.execute("BEGIN TRANSACTION")
        try:
            for table in OUTPUT_TABLES:
                con.execute(statement(f"delete_run_{table}"), {"run_id": run_id})
                if staged.get(table):
                    con.execute(statement(f"load_run_{table}"), {"files": list(staged[table])})
            con.execute(statement("run_succeed"), {
                "run_id": run_id,
                "n_items": summary["n_items"],
                "n_classes": summary["n_classes"],
                "modalities": list(summary["modalities"]),
                "details": json.dumps(summary["details"], sort_keys=True),
            })
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise


def query(db: str | Path, name: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run a report query of sql/ read-only, as an Arrow table."""
    with connect(db, read_only=True) as con:
        return con.execute(statement(name), dict(params or {})).to_arrow_table()


def export_run(db: str | Path, run_id: str, directory: str | Path) -> list[Path]:
    """Write the run's rows of every output table, and its runs row, as Parquet files for other engines."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with connect(db, read_only=True) as con:
        for table in ("runs", *OUTPUT_TABLES):
            reader = con.execute(statement(f"export_{table}"), {"run_id": run_id}).to_arrow_reader()
            path = out / f"{table}.parquet"
            with pq.ParquetWriter(path, reader.schema) as writer:
                for batch in reader:
                    writer.write_batch(batch)
            written.append(path)
    return written
