"""The one module that owns the DuckDB output file: schema and its migrations, run lifecycle, atomic commit, reads.

Readers never see half a run: partitions are staged as Parquet files, and one
transaction deletes the run's old rows, bulk-loads the staged ones and flips
the run to 'succeeded'. Until then `current_labels` shows the previous
succeeded run, and a run id that succeeded before keeps that success however
its re-run ends: every attempt has its own row in `run_attempts`.

The file records its schema version (`schema_migrations`): a write connection
applies the migrations of sql/migrations/ that the file lacks, in order. Reading
never writes: an older file is read through an upgraded temporary copy.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from tasks.folders import beside, check_not_kept
from tasks.models import FORMAT as MODEL_FORMAT
from tasks.models import Model, load_model, models_folder, publish_model, remove_models, unpublish_model
from tasks.sql import MIGRATIONS, OUTPUT_TABLES, VIEWS, statement


# Every DuckDB connection of a run works within this much memory and spills past it: peak RSS must stay
# flat in the catalog's size (bench/bench_pipeline.py), and DuckDB's default is 80% of the machine.
DUCKDB_MEMORY = {"memory_limit": "512MB"}
# A DuckDB file we create is written in DuckDB 1.5's storage format: DuckDB 1.5 and later read it (2.0's own format
# needs 2.0), and DuckDB 2.0 writes it about twice as fast as 1.5.6 wrote its default, the 1.0 format (a 1M
# relabel's item_labels and joint_labels rows: 2.3-2.5 s -> 1.2-1.4 s; docs/performance.md). A file keeps the format
# it was made in.
DUCKDB_FILE = {**DUCKDB_MEMORY, "storage_compatibility_version": "v1.5.0"}
LOCK_WAIT_S = 60.0
# What recording a run's failure waits for readers, when they made its commit wait LOCK_WAIT_S in vain: the reader
# that held the file for that long likely holds it still (the record waited a second minute, then failed too).
RECORD_WAIT_S = 5.0
# A commit that fails on a full disk can leave the file inconsistent (operations.md, "A full disk"), so none
# starts without room: what the file and its write-ahead log grew by in a commit was 1x (a 1M-item relabel,
# its rows written compressed) to 12x (a 2,000-item night, its rows through the log) the staged Parquet it loads.
ROOM_PER_STAGED_BYTE = 16
MIN_FREE_MB = 64  # at least this much free; PAIRWISE_MIN_FREE_MB sets another
# Registering a run and recording its failure took 0.5-0.8 MB of free space on a 7 MB file (the checkpoint as the
# registration's connection closes): with less, a run registered and could not record its end, left 'running'.
RECORD_ROOM_MB = 4


@contextmanager
def connect(db: str | Path, *, read_only: bool = False,
            wait: float | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A short-lived connection, once other processes let it (waiting ``wait`` s, LOCK_WAIT_S unless given).

    A write connection creates the file and its folder and brings the schema
    to the latest version. A read-only one changes nothing, since sources read
    the catalog's own tables with it before a run may write: our tables are
    read through `reader`.
    """
    if not read_only:
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    con = _open(db, read_only, LOCK_WAIT_S if wait is None else wait)
    try:
        if not read_only:
            _migrate(con, db)
        yield con
    finally:
        con.close()


class DatabaseBusy(RuntimeError):
    """Another process kept the file open past a connection's wait: the task does not retry (its retries waited
    the whole time again, 190 s in all)."""


def _open(db: str | Path, read_only: bool, wait: float) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection, once other processes let it: DuckDB lets one process write or any number read.
    A writer waits up to ``wait`` s for readers (an analyst's session, a report) to close the file: a
    run's commit failed after its task's two retries (5 s) while a reader held the file. A reader waits as
    long for a writer (another run's commit): a night that read its stored models as a run committed failed
    at once with DuckDB's own message."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return duckdb.connect(str(db), read_only=read_only, config=DUCKDB_FILE)
        except duckdb.IOException as error:
            if "Could not set lock" not in str(error):
                raise
            if time.monotonic() > deadline:
                holder = re.search(r"Conflicting lock is held in (.*?)(?:\. |$)", str(error))
                raise DatabaseBusy(f"{db} is open in another process ({holder.group(1) if holder else 'unknown'}); "
                                   f"waited {wait:g} s for it to close the file") from None
            time.sleep(0.5)


def check_db_file(db: str | Path) -> None:
    """Refuse (ValueError, one line) a --db that exists and cannot be a DuckDB file: a folder, or a file without
    DuckDB's header ("DUCK" at byte 8). One that does not exist yet is created by the first write."""
    path = Path(db)
    if path.is_dir():
        raise ValueError(f"--db {db}: a folder, not a DuckDB file")
    if path.exists():
        with path.open("rb") as handle:
            if handle.read(12)[8:] != b"DUCK":
                raise ValueError(f"--db {db}: not a DuckDB file")


def check_writable(db: str | Path) -> None:
    """Refuse (ValueError, one line) a --db a run could not write, before anything runs: met at the run lock or
    the commit, after Prefect's start, it was a failed run (exit 1) with DuckDB's or Python's error."""
    path = Path(db).resolve() if Path(db).is_symlink() else Path(db)
    folder = path.parent
    if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"--db {db}: cannot write in {folder} (a run writes its lock, DuckDB's write-ahead log "
                         "and its staging folder there)")
    for own in (path, beside(db, ".wal"), beside(db, ".lock")):
        if own.exists() and not os.access(own, os.W_OK):
            raise ValueError(f"--db {db}: {own} is read-only")


@contextmanager
def reader(db: str | Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to read our tables, at the latest schema version. It never writes.

    A file of ours at an older version (users keep files for months and read
    them with `pairwise report`) is read through an upgraded copy (see
    `_upgraded_copy`): upgrading the file itself would need write access, which
    a snapshot or a read-only file does not give, and would leave a production
    file too new for its older nightly worker. A newer file is refused. A file
    without our tables opens as it is.
    """
    with connect(db, read_only=True) as con:
        version = schema_version(con)
        _refuse_newer(db, version)
        if version is None or version == len(MIGRATIONS):
            yield con
            return
        copy = _upgraded_copy(db, version)  # made while this connection keeps writers out
    with connect(copy, read_only=True) as con:
        yield con


# (file, its state) -> its upgraded copy: a report's queries each open a reader, and copy and upgrade once
_UPGRADED: dict[tuple[Any, ...], Path] = {}


def _upgraded_copy(db: str | Path, version: int) -> Path:
    """A copy of the file (with its write-ahead log) in a temporary folder, upgraded to the latest version.

    Made once per process and state of the file, and removed when the process
    ends. Simpler than reading through compatibility views, which would repeat
    every migration in another form, and exact: the copy is what an upgrade in
    place would give. Its cost, a copy of the file, is paid only until a run
    upgrades the file.
    """
    source = Path(db).resolve()
    files = [path for path in (source, Path(f"{source}.wal")) if path.exists()]
    key = (source, *((stat.st_ino, stat.st_size, stat.st_mtime_ns) for stat in map(os.stat, files)))
    if key not in _UPGRADED:
        folder = Path(tempfile.mkdtemp(prefix="pairwise-read-"))
        atexit.register(shutil.rmtree, folder, True)
        try:
            for path in files:
                shutil.copyfile(path, folder / path.name)
        except OSError as error:
            shutil.rmtree(folder, ignore_errors=True)
            raise RuntimeError(
                f"{db} is at schema version {version}: reading it takes an upgraded copy in {folder.parent}, which "
                f"failed ({error.strerror or error}); make room there, set TMPDIR, or let a run upgrade the file"
            ) from None
        with duckdb.connect(str(folder / source.name), config=DUCKDB_FILE) as con:
            _migrate(con, db)
        _UPGRADED[key] = folder / source.name
    return _UPGRADED[key]


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The file's schema version: None if it holds none of our tables, 0 if written before versions were recorded."""
    tables = {name for (name,) in con.execute(statement("schema_tables")).fetchall()}
    if "schema_migrations" in tables:
        return con.execute(statement("schema_version")).fetchall()[0][0]
    return 0 if "runs" in tables else None


def _refuse_newer(db: str | Path, version: int | None) -> None:
    if version is not None and version > len(MIGRATIONS):
        raise ValueError(f"{db}: schema version {version} is newer than this code knows ({len(MIGRATIONS)}); "
                         "use a newer pairwise")


def _migrate(con: duckdb.DuckDBPyConnection, db: str | Path) -> None:
    """Apply the migrations the file lacks, each in one transaction with its record, then re-create the views."""
    version = schema_version(con) or 0
    _refuse_newer(db, version)
    for migration in MIGRATIONS[version:]:
        try:
            with _transaction(con):
                con.execute(migration.text)
                con.execute(statement("schema_migration_record"),
                            {"version": migration.version, "name": migration.name})
        except duckdb.Error as error:
            raise RuntimeError(f"{db}: upgrading to schema version {migration.version} ({migration.name}) failed, "
                               f"the file is left at version {migration.version - 1}: {str(error).splitlines()[0]}"
                               ) from error
    for view in VIEWS:
        con.execute(statement(view))


@contextmanager
def _transaction(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    try:
        yield
        con.execute("COMMIT")
    except BaseException:
        # a COMMIT that failed (a full disk) has ended the transaction already: the ROLLBACK's own error
        # ("no transaction is active") would hide why
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        raise


class RunLocked(RuntimeError):
    """Another run is writing the same DuckDB file."""


# the run locks this process holds: while it holds a file's, no other attempt on that file can be alive
_HELD: set[Path] = set()


def _lock_path(db: str | Path) -> Path:
    """``<db>.lock`` in its folder's real path; the lock itself must not be a symbolic link (``_open_lock``)."""
    path = beside(db, ".lock")
    return path.parent.resolve() / path.name


def _refuse_link(path: Path) -> None:
    """The run truncates its lock file and writes its pid into it: a link there, planted by whoever can write
    the database's folder, made it wipe the link's target instead (a hard link: the same file)."""
    if path.is_symlink():
        raise ValueError(f"{path}: the run lock is a symbolic link; refusing to use it (remove the link)")
    if path.is_file() and path.stat().st_nlink > 1:
        raise ValueError(f"{path}: the run lock is a hard link to another file; refusing to use it (remove it)")


def _open_lock(path: Path, flags: int) -> Any:
    """The lock file, opened never through a link (O_NOFOLLOW: nor one made after the check)."""
    _refuse_link(path)
    return os.fdopen(os.open(path, flags | os.O_NOFOLLOW, 0o644), "r+" if flags & os.O_RDWR else "r")


def _locked(db: str | Path, handle: Any) -> RunLocked:
    """The error for a lock another process holds. ``handle``, the lock file read from its start, names the last
    run that held it; the process that holds it now may be another (a backup script that takes the lock to copy
    the file, named then as its holder), and where this host's kernel lists it, that one is named."""
    recorded = handle.read().strip() or "unknown"
    holder = _flock_holder(os.fstat(handle.fileno()))
    if holder is None or recorded == f"pid {holder} on {socket.gethostname()}":
        return RunLocked(f"another run is writing {db} ({recorded}); try again when it has finished")
    return RunLocked(f"{db} is locked by another process (pid {holder}: {_command(holder)}); try again when it "
                     "has finished")


def _flock_holder(status: os.stat_result) -> int | None:
    """The pid that holds a flock on the file ``status`` describes, as this host's /proc/locks lists it (None
    where there is no such list, or no local holder: a run on another host of a shared file system)."""
    device = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    with suppress(OSError):
        for line in Path("/proc/locks").read_text().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
                return int(fields[4])
    return None


def _command(pid: int) -> str:
    """A process's command line, shortened, as ps shows it; 'unknown' if it cannot be read (it ended)."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "unknown"
    command = " ".join(word.decode(errors="replace") for word in words if word)
    return command if len(command) <= 80 else f"{command[:77]}..."


def check_run_lock(db: str | Path) -> None:
    """RunLocked if another run holds ``<db>.lock`` now: the command line asks before it starts Prefect (a
    temporary server's 10 s), so that a second run fails at once; the run itself then takes the lock."""
    path = _lock_path(db)
    _refuse_link(path)
    if path.exists() and not path.is_file():  # the run would fail on it after Prefect's start, with the OS's words
        raise ValueError(f"{path}: not a lock file but a {'folder' if path.is_dir() else 'special file'}; remove it")
    if not path.is_file():
        return
    with _open_lock(path, os.O_RDONLY) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _locked(db, handle) from None
        fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def run_lock(db: str | Path) -> Iterator[None]:
    """Hold ``<db>.lock`` for a whole run: a second run on the same file fails at once, clearly.

    The OS releases the lock when the holder's process ends, however it ends
    (SIGKILL included), so a crash never leaves it behind.
    """
    path = _lock_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open_lock(path, os.O_RDWR | os.O_CREAT) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise _locked(db, handle) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        _HELD.add(path)
        try:
            yield
        finally:
            _HELD.discard(path)
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Started:
    """A registered attempt of a run, and what registering it found."""

    attempt: int  # its number among the run id's attempts (1, 2, ...)
    stale: list[str]  # run ids of the attempts found running, so abandoned: marked failed
    succeeded_before: bool = False  # the run id had succeeded: this attempt replaces what it committed


def start_run(db: str | Path, run_id: str, params: Mapping[str, Any]) -> Started:
    """Register a new attempt of the run, in one transaction; the caller holds `run_lock`.

    Every attempt still 'running' is abandoned, and marked failed (with its
    run, unless it succeeded before): its process held the lock for as long as
    it ran and no longer does, whatever its pid says now (a restarted
    container gives the next run the same pid). A run id that succeeded before
    stays succeeded until this attempt commits; once another run has succeeded
    after it, it cannot be run again (ValueError): its label_changes are history
    that later runs' build on.
    """
    if _lock_path(db) not in _HELD:
        raise RuntimeError(f"registering a run on {db} takes its run lock (store.run_lock), which this process "
                           "does not hold")
    host, pid = _this_process()
    text = json.dumps(params, sort_keys=True)
    with connect(db) as con, _transaction(con):
        stale = con.execute(statement("attempts_running")).fetchall()
        for stale_id, number, stale_host, stale_pid in stale:
            error = (f"abandoned: its process ended without finishing (pid {stale_pid} on {stale_host}; "
                     f"found by run {run_id})")
            con.execute(statement("attempt_fail"), {"run_id": stale_id, "attempt": number, "error": error})
            con.execute(statement("run_fail"), {"run_id": stale_id, "error": error})
        before = (con.sql(statement("report_run"), params={"run_id": run_id}).to_arrow_table()
                  .column("status").to_pylist())
        since = con.execute(statement("run_succeeded_since"), {"run_id": run_id}).fetchall()
        _refuse_rewrite(run_id, [later for (later,) in since])
        con.execute(statement("run_start"), {"run_id": run_id, "params": text})
        [(attempt,)] = con.execute(statement("attempt_start"),
                                   {"run_id": run_id, "params": text, "host": host, "pid": pid}).fetchall()
    return Started(attempt=attempt, stale=[stale_id for stale_id, *_ in stale],
                   succeeded_before=before == ["succeeded"])


def _this_process() -> tuple[str, int]:
    """The host and pid an attempt is registered with."""
    return socket.gethostname(), os.getpid()


def registered_attempt(db: str | Path, run_id: str) -> int | None:
    """The attempt of ``run_id`` that this process registered and that is still running, if any, read without
    writing: what start_run committed for a run stopped before its number reached the flow. The caller holds
    `run_lock`, so no other process has registered one since."""
    table = query_ours(db, "attempts_running")
    mine = [row["attempt"] for row in ([] if table is None else table.to_pylist())
            if (row["run_id"], row["host"], row["pid"]) == (run_id, *_this_process())]
    return max(mine, default=None)


def check_rerun(db: str | Path, run_id: str) -> None:
    """Before a run starts: refuse (ValueError) a run id that succeeded before and that later runs built on.
    ``start_run`` checks it again under the run lock."""
    since = query_ours(db, "run_succeeded_since", {"run_id": run_id})
    _refuse_rewrite(run_id, [] if since is None else since.column("run_id").to_pylist())


def _refuse_rewrite(run_id: str, since: list[str]) -> None:
    if since:
        raise ValueError(f"run {run_id} succeeded before and {len(since)} later run{'s' if len(since) > 1 else ''} "
                         f"({', '.join(since[:3])}{', ...' if len(since) > 3 else ''}) committed since: its "
                         "label_changes are what theirs build on, and a re-run would rewrite them; give this run a "
                         "new --run-id")


def _check_succeeded(con: duckdb.DuckDBPyConnection, db: str | Path, run_id: str) -> None:
    """Before the commit: the run's row reads back succeeded, and every live catalog row's run has its row.
    Readers and syncs find rows through their run's, so none may commit without it: after a COMMIT that failed
    on a full disk, DuckDB 1.5.6 left files in which rows written to runs were silently lost (the next night's
    own, or earlier runs'). Such a file is refused from then on, in one line, instead of growing worse."""
    status = con.sql(statement("report_run"), params={"run_id": run_id}).to_arrow_table().column("status").to_pylist()
    orphans = con.execute(statement("catalog_runs_missing")).fetchall()[0][0]
    if status != ["succeeded"] or orphans:
        found = (f"run {run_id}'s row in runs reads back as {status[0] if status else 'missing'}"
                 if status != ["succeeded"] else f"{orphans:,} catalog rows name runs missing from runs")
        raise RuntimeError(f"{db}: {found} in this run's commit, so nothing was committed; the file is "
                           "inconsistent (a commit that failed on a full disk can leave it so): restore a copy, or "
                           "rebuild it with EXPORT DATABASE and IMPORT DATABASE")


class NoRoom(RuntimeError):
    """Too little free space on the database's disk to start a commit."""


def min_free_bytes() -> float:
    """The least free space a commit starts with: PAIRWISE_MIN_FREE_MB megabytes, or MIN_FREE_MB. A run checks
    it as it starts, so that a typo there does not fail the run at its commit."""
    given = os.environ.get("PAIRWISE_MIN_FREE_MB", "").strip()
    try:
        megabytes = float(given) if given else MIN_FREE_MB
    except ValueError:
        megabytes = math.nan
    if not 0 <= megabytes < math.inf:
        raise ValueError(f"PAIRWISE_MIN_FREE_MB must be a number of megabytes, 0 or more, not {given!r}")
    return megabytes * 2**20


def check_room(db: str | Path, files: Sequence[str]) -> None:
    """Refuse a commit of these staged files, before it writes anything, if the disk may not hold it."""
    staged = sum(os.path.getsize(path) for path in files if os.path.isfile(path))  # a missing one fails the load
    needed = max(min_free_bytes(), ROOM_PER_STAGED_BYTE * staged)
    free = shutil.disk_usage(Path(db).resolve().parent).free
    if free < needed:
        raise NoRoom(f"{db}: its disk has {free / 2**20:,.0f} MB free and this run's commit may need "
                     f"{needed / 2**20:,.0f} MB ({staged / 2**20:,.1f} MB of staged rows), so nothing was committed "
                     "and the file is as it was: free space on that disk, then run again")


def check_room_to_record(db: str | Path) -> None:
    """Refuse (NoRoom) to register a run on a disk without room to record its end: the smaller of RECORD_ROOM_MB
    and the commit's floor (PAIRWISE_MIN_FREE_MB 0 turns both off). Checked under the run lock (which made the
    file's folder) before anything is written."""
    needed = min(RECORD_ROOM_MB * 2**20, min_free_bytes())
    free = shutil.disk_usage(Path(db).resolve().parent).free
    if free < needed:
        raise NoRoom(f"{db}: its disk has {free / 2**20:,.1f} MB free, less than the {needed / 2**20:,.0f} MB a run "
                     "needs to record its start and end, so the run did not start and nothing was written: free "
                     "space on that disk, then run again")


def fail_run(db: str | Path, run_id: str, attempt: int, error: str, busy: bool = False) -> None:
    """Mark the attempt failed, and its run too unless the run succeeded before: that success stays current.
    ``busy``: the run failed on readers that kept the file through its commit's wait; wait RECORD_WAIT_S only."""
    with connect(db, wait=RECORD_WAIT_S if busy else None) as con, _transaction(con):
        con.execute(statement("attempt_fail"), {"run_id": run_id, "attempt": attempt, "error": error})
        con.execute(statement("run_fail"), {"run_id": run_id, "error": error})


@dataclass(frozen=True)
class CatalogUpdate:
    """How a run's commit changes the catalog's state (catalog_items), and so label_changes.

    A full run labels every source item: the live items it did not label are gone. An incremental night
    labels some (``state``: its staged catalog_state parts) and names the gone ones (``deleted``). With
    ``stability`` above 0, a refit leaves an unchanged item's label unless the new model is that confident in
    another (sql/catalog_keep_stable.sql).
    """

    state: tuple[str, ...] = ()
    deleted: tuple[str, ...] | None = None  # None: a full run
    stability: float = 0.0
    files: str | None = None  # staged signatures of the source's files, all fingerprinted by the run (catalog_files)
    # the run read a --changed-column: its values are the items' versions; without one, an item whose embeddings
    # did not change keeps the version recorded before (a weekly refit without it must not make the next
    # nights with it take every item for changed)
    versioned: bool = False
    parents: Mapping[str, str] | None = None  # the run's classes' parents: stability keeps rows of the same alone
    versions: str | None = None  # a night with a --changed-column: its staged source ids and values


def commit_run(
    db: str | Path, run_id: str, attempt: int, staged: Mapping[str, list[str]], summary: Mapping[str, Any],
    model: Mapping[str, Any] | None = None, catalog: CatalogUpdate = CatalogUpdate(),
) -> dict[str, dict[str, int]]:
    """Replace the run's rows by the staged Parquet parts and mark run and attempt succeeded, in one transaction.

    The run records the model it labelled with (``summary["model_id"]``, if any).
    With ``model`` (its row's values, and ``folder``: the sealed model in the
    run's staging), that model is stored too: in the transaction its folder is
    renamed into ``<db>.models/<model_id>`` and then its row inserted. A
    model is visible only with its row, so readers never see half of one; after
    a failure the folder is moved back to staging (for the commit's retry), and
    a crash between rename and commit leaves a folder without a row, which the
    next run removes (``tasks.models.remove_models``).

    The catalog's state and the run's label_changes change in the same transaction (``catalog``); the
    counts of those changes, by change and cause, are returned and kept in ``runs.details``.
    Nothing is written without room for it on the disk (``check_room``).
    """
    check_room(db, [path for paths in staged.values() for path in paths]
               + [path for path in (*catalog.state, *(catalog.deleted or ()), catalog.files, catalog.versions) if path])
    with connect(db) as con:
        # rows carry their order in columns (rank, item_id): letting DuckDB insert in any order
        # loads on every core (1M items: 3.4 s -> 2.1 s for the labels and issues)
        con.execute("SET preserve_insertion_order = false")
        published = False
        try:
            with _transaction(con):
                for table in OUTPUT_TABLES:
                    con.execute(statement(f"delete_run_{table}"), {"run_id": run_id})
                    if staged.get(table):
                        con.execute(statement(f"load_run_{table}"), {"files": list(staged[table])})
                if model is not None:
                    path = publish_model(db, model["folder"], model["model_id"])
                    published = True
                    con.execute(statement("model_insert"), {
                        "model_id": model["model_id"], "run_id": run_id, "n_items": summary["n_items"],
                        "params": json.dumps(model["params"], sort_keys=True),
                        "modalities": list(summary["modalities"]), "dims": json.dumps(model["dims"]),
                        "n_classes": summary["n_classes"], "class_hash": model["class_hash"],
                        "schema_version": MODEL_FORMAT, "content_hash": model["content_hash"], "path": path,
                    })
                changes, kept = _update_catalog(con, run_id, summary.get("model_id"),
                                                list(summary["modalities"]), catalog)
                stability = {} if kept is None else {"stability": {"at": catalog.stability, "kept": kept}}
                con.execute(statement("run_succeed"), {
                    "run_id": run_id,
                    "attempt": attempt,
                    "n_items": summary["n_items"],
                    "n_classes": summary["n_classes"],
                    "modalities": list(summary["modalities"]),
                    "details": json.dumps({**summary["details"], "changes": changes, **stability}, sort_keys=True),
                    "model_id": summary.get("model_id"),  # None: a commit of rows alone (tests)
                })
                con.execute(statement("attempt_succeed"), {"run_id": run_id, "attempt": attempt})
                _check_succeeded(con, db, run_id)
            return changes
        except BaseException as error:
            if _committed(con, run_id, attempt):  # a signal during the COMMIT: DuckDB raised though it went through
                raise KeyboardInterrupt(f"interrupted as run {run_id} committed; the run stands") from error
            if published:  # the row was rolled back: the folder goes back to staging, for a retry of the commit
                try:
                    unpublish_model(db, model["model_id"], model["folder"])
                except Exception:  # best effort: the next run removes a folder left without a row
                    with suppress(Exception):
                        remove_models(db, keep=set(_model_ids(con)))
            raise


def _committed(con: duckdb.DuckDBPyConnection, run_id: str, attempt: int) -> bool:
    """Whether the attempt's commit went through. SIGTERM or Ctrl-C while DuckDB runs the COMMIT makes it raise
    "Query interrupted" after the COMMIT took effect: undoing the model's publication then deleted a stored
    model's files under its committed row, and a retry of the commit failed on that row. Interrupted instead
    (not retried), the run stands whole."""
    with suppress(duckdb.Error):
        return con.execute("SELECT status = 'succeeded' FROM run_attempts WHERE run_id = $run_id AND "
                           "attempt = $attempt", {"run_id": run_id, "attempt": attempt}).fetchall() == [(True,)]
    return False


def _update_catalog(con: duckdb.DuckDBPyConnection, run_id: str, model_id: str | None, modalities: list[str],
                    catalog: CatalogUpdate) -> tuple[dict[str, dict[str, int]], int | None]:
    """In the commit's transaction: the run's label_changes, then catalog_items; the changes' counts, and how
    many items refit stability kept (None without it).
    ``modalities``: the run's, in its order (its fingerprints are taken over them)."""
    ids = {"run_id": run_id}
    if catalog.state:
        con.execute(statement("catalog_touched"), {**ids, "files": list(catalog.state)})
    else:
        con.execute(statement("catalog_touched_joint"), ids)
    if catalog.deleted is None:
        con.execute(statement("catalog_gone_unlabelled"))
    else:
        con.execute(statement("catalog_gone_listed"), {"files": list(catalog.deleted)})
    kept = None
    parents = json.dumps(catalog.parents, sort_keys=True)  # as runs.details.parents records them
    if catalog.stability > 0:
        con.execute(statement("catalog_keep_stable"), {**ids, "model_id": model_id, "stability": catalog.stability,
                                                        "parents": parents})
        kept = con.execute("SELECT count(*) FROM kept").fetchall()[0][0]
        con.execute(statement("catalog_keep_stable_drop"))
        if catalog.versioned:
            con.execute(statement("catalog_keep_stable_version"))
    con.execute(statement("label_changes_earlier"), ids)
    con.execute(statement("delete_run_label_changes"), ids)
    con.execute(statement("label_changes_insert"), {**ids, "model_id": model_id, "modalities": modalities,
                                                    "parents": parents})
    if con.execute("SELECT count(*) FROM earlier").fetchall()[0][0]:  # a re-run of a run that had succeeded
        con.execute(statement("label_changes_compose"), ids)
        con.execute(statement("delete_run_label_changes"), ids)
        con.execute(statement("label_changes_insert_composed"))
    if catalog.versions is not None:
        con.execute(statement("catalog_record_versions"), {"source": catalog.versions})
    con.execute(statement("catalog_merge_touched"), {**ids, "model_id": model_id, "versioned": catalog.versioned})
    con.execute(statement("catalog_mark_gone"), ids)
    if catalog.files is not None:
        con.execute(statement("catalog_files_clear"))
        con.execute(statement("catalog_files_insert"), {**ids, "files": [catalog.files]})
    changes: dict[str, dict[str, int]] = {}
    for change, cause, n in con.execute(statement("run_label_changes"), ids).fetchall():
        changes.setdefault(change, {})[cause] = n
    return changes, kept


def _model_ids(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [model_id for (model_id,) in con.execute(statement("model_ids")).fetchall()]


def delete_models(con: duckdb.DuckDBPyConnection, model_ids: Sequence[str]) -> None:
    """Delete stored models' rows in one transaction (tasks/model_retention.py removes their folders after)."""
    with _transaction(con):
        con.execute(statement("model_delete"), {"model_ids": list(model_ids)})


def delete_runs(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str], tables: Sequence[str]) -> None:
    """Delete runs' rows from ``tables`` (delete_run_<table>.sql), then their attempts and rows, in one transaction
    (tasks/run_retention.py). Run by run: each statement's filter then skips the row groups of other runs."""
    with _transaction(con):
        for run_id in run_ids:
            for name in (*(f"delete_run_{table}" for table in tables), "run_attempts_delete", "run_delete"):
                con.execute(statement(name), {"run_id": run_id})


def model_ids(db: str | Path) -> list[str]:
    """The ids of the stored models (none in a file that does not exist yet)."""
    with connect(db) as con:
        return _model_ids(con)


# file -> the reader `reading` keeps open for it, and the answers it gave; a context variable, so no two threads
# share a connection
_READING: ContextVar[Mapping[Path, _Reading] | None] = ContextVar("reading", default=None)


@dataclass(frozen=True)
class _Reading:
    con: duckdb.DuckDBPyConnection
    answers: dict[tuple[str, str], pa.Table]


@contextmanager
def reading(db: str | Path) -> Iterator[None]:
    """Within it, `query` on ``db`` reuses one reader: a report runs some fifteen queries, and opening a
    reader costs about 13 ms. The same query with the same parameters is answered once: the Markdown and HTML
    reports ask several of the same (the class shares scan every label row of the run: 0.1 s at 1M items).
    Nested, it reuses the outer one."""
    open_readers = _READING.get() or {}
    if Path(db) in open_readers:
        yield
        return
    with reader(db) as con:
        token = _READING.set({**open_readers, Path(db): _Reading(con, {})})
        try:
            yield
        finally:
            _READING.reset(token)


def query(db: str | Path, name: str, params: Mapping[str, Any] | None = None) -> pa.Table:
    """Run a report query of sql/ read-only (see `reader`, and `reading`), as an Arrow table."""
    arguments = dict(params or {})
    open_reader = (_READING.get() or {}).get(Path(db))
    if open_reader is None:
        with reader(db) as con:
            return con.sql(statement(name), params=arguments).to_arrow_table()
    key = (name, json.dumps(arguments, sort_keys=True, default=str))
    if key not in open_reader.answers:
        open_reader.answers[key] = open_reader.con.sql(statement(name), params=arguments).to_arrow_table()
    return open_reader.answers[key]


def query_ours(db: str | Path, name: str, params: Mapping[str, Any] | None = None) -> pa.Table | None:
    """A report query's rows, read without writing; None before any run: no file yet, or a DuckDB file of the
    user's own tables alone (a table: source)."""
    if not Path(db).is_file():
        return None
    try:
        return query(db, name, params)
    except duckdb.CatalogException:
        return None


def stored_model(db: str | Path, model_id: str) -> tuple[dict[str, Any], Model]:
    """A stored model's row and the model, by id or 'latest', every file checked against the row's content hash.

    ValueError (bad input, one line) if there is no such model, or if one of
    its files is missing, truncated or changed (``ModelMismatch``).
    """
    row = stored_model_row(db, model_id)
    return row, load_model(stored_model_folder(db, row["model_id"]), row["content_hash"], row["model_id"])


def stored_model_row(db: str | Path, model_id: str) -> dict[str, Any]:
    """A stored model's row, by id or 'latest'; ValueError (one line) if there is none: no model yet, removed, or
    never stored. Cheap, so `pairwise run --model` asks it before Prefect starts (a refusal took 10 s)."""
    found = query_ours(db, "model_row", {"model_id": model_id})
    if found is None or not found.num_rows:
        if (ids := query_ours(db, "model_ids")) is None or not ids.num_rows:
            raise ValueError(f"model {model_id}: {db} holds no stored model yet: a full run (without --model) fits "
                             "and stores one")
        used = query_ours(db, "model_used_by", {"model_id": model_id})
        runs = [] if used is None else used.column("run_id").to_pylist()
        if runs:  # removed (`pairwise models --remove/--keep`): the runs still name it
            raise ValueError(f"model {model_id} is no longer stored (removed; run {runs[0]} fitted it); `pairwise "
                             f"models --db {db}` lists the stored ones")
        raise ValueError(f"model {model_id}: no such stored model in {db} (`pairwise models --db {db}` lists them)")
    return found.to_pylist()[0]


def stored_model_folder(db: str | Path, model_id: str) -> Path:
    """Where a stored model's files are: ``<db>.models/<model_id>`` beside the file as it is named now (models.path
    records where the run put them, which a renamed or copied file no longer finds)."""
    return models_folder(db) / model_id


class RunFailed(RuntimeError):
    """A run that had registered failed on what reads as bad input (a ValueError: a source file gone mid-run, a
    path a worker cannot read): its failed row is written, so it is a failed run (exit 1), not bad input with
    nothing written (exit 2). The run's own error is its cause, and its message the reason `runs` records."""


class ExportFailed(RuntimeError):
    """The run committed, then writing its Parquet export failed: the run stands, its export does not."""

    exit_code = 3  # of `pairwise run`, apart from 1 (the run failed) and 2 (bad input)


def check_export_dir(directory: str | Path, db: str | Path) -> None:
    """Refuse an export folder that cannot be created or written, or that is one of ``db``'s own, before a
    run computes anything.

    The export comes after the commit, too late to fail the run for it. The
    folder is not created here: bad input leaves nothing behind.
    """
    if "://" in str(directory):  # pathlib would make a local folder named "s3:"
        raise ValueError(f"--export-dir: {directory} is a URI; the export writes to a local folder only")
    check_not_kept(directory, db, "--export-dir")
    path = Path(directory)
    nearest = next(folder for folder in (path, *path.parents) if folder.exists())
    if not nearest.is_dir():
        raise ValueError(f"--export-dir: {nearest} is not a directory")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ValueError(f"--export-dir: cannot write in {nearest}")


def export_run(db: str | Path, run_ids: Sequence[str], directory: str | Path) -> list[Path]:
    """Write the runs' rows of every output table, and their runs rows, as Parquet files for other engines
    (a night and the refit that followed it: one export, each row with its run_id).

    Every file is written under a temporary name first, and all are closed before any replaces the last
    export's: a failure while writing (a full disk) leaves the last export as it was. Then each of the last
    export's files is moved aside as the new one takes its name; should a rename fail part-way (a file made
    immutable), those already done are undone: the folder holds one whole export, the new or the last, never
    files of both. Other files in the folder are left as they are."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tables = ("runs", *OUTPUT_TABLES, "label_changes")
    final = [out / f"{table}.parquet" for table in tables]
    if blocked := [name for name in final if name.exists() and not name.is_file()]:
        raise IsADirectoryError(f"{blocked[0]} is not a file")  # before any is written or replaced
    partial = [name.with_name(f".{name.name}.{os.getpid()}.partial") for name in final]
    done: list[tuple[Path, Path | None]] = []  # (file, the last export's, moved aside; None if it had none)
    try:
        with reader(db) as con:
            for table, path in zip(tables, partial, strict=True):
                results = (con.sql(statement(f"export_{table}"), params={"run_id": run_id}).to_arrow_reader()
                           for run_id in run_ids)
                first = next(results)
                with pq.ParquetWriter(path, first.schema) as writer:
                    for batches in chain([first], results):
                        for batch in batches:
                            writer.write_batch(batch)
        for name, path in zip(final, partial, strict=True):
            last: Path | None = name.with_name(f".{name.name}.{os.getpid()}.previous")
            try:
                os.replace(name, last)
            except FileNotFoundError:
                last = None
            done.append((name, last))
            os.replace(path, name)
    except BaseException:
        for name, last in reversed(done):  # (should one of these fail, the last export's files stay aside)
            if last is None:
                name.unlink(missing_ok=True)
            else:
                os.replace(last, name)
        raise
    finally:
        for path in partial:
            path.unlink(missing_ok=True)
    for _, last in done:
        if last is not None:
            last.unlink()
    return final
