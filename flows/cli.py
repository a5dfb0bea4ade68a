"""The ``pairwise`` console script: run, demo, report, models, runs, classes (class embeddings from names), and worker.

Prefect's console output is turned down to what a user needs (our own lines
and the report); everything still reaches the Prefect API, so a run shows in
full in the UI when PREFECT_API_URL points at a server. --verbose brings
Prefect's console logs back.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack, contextmanager, suppress
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn, get_args, get_origin

from tasks.errors import interrupted, terminated

if TYPE_CHECKING:
    from pydantic import BaseModel

    from flows.prefect_server import PrefectUnreachable

# A short-lived process with Prefect's temporary server: keep its background
# services' chatter (telemetry, sqlite "database is locked" retries) off the
# console, and give the server time to start on a busy machine (Prefect's 20 s
# timed out here with other jobs on both cores). Users' own settings win.
_QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_LOGGING_LEVEL": "CRITICAL",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


# Arrow's allocator. mimalloc (pyarrow's default) contends with itself when
# two task threads decode at once: decoding the 1M catalog on two threads took
# 3.8-6.1 s against 7.3-8.1 s on one, where jemalloc (bundled in pyarrow's
# Linux wheels) took 3.5-3.7 s against 6.8 s, and a stored-model relabel's
# pass went from 15.8-16.1 s to 13.2-13.3 s (docs/performance.md). Arrow has
# jemalloc give freed pages back after about 1 s; a label task frees each
# batch's buffers and asks for as many again a batch later, after its labelling,
# and got fresh pages to fault in: with jemalloc's own 10 s, the relabel's pass
# took 7.7-7.9 s instead of 8.2-8.3 s (system time 1.2-1.4 s against 2.1-2.2 s),
# with the same peak RSS. If mimalloc is used (another platform, or the user's
# choice): it returns freed memory to the OS after 10 ms by default, and
# faulting it back in dominated decoding; after 250 ms unused, memory that
# batches keep reusing stays and the rest goes back (flat peak RSS). Read when
# pyarrow loads, so set before anything imports it; the user's own settings win.
ALLOCATOR_DEFAULTS = {"MIMALLOC_PURGE_DELAY": "250", "MIMALLOC_ARENA_EAGER_COMMIT": "1"} | (
    {"ARROW_DEFAULT_MEMORY_POOL": "jemalloc", "JE_ARROW_MALLOC_CONF": "dirty_decay_ms:10000"}
    if sys.platform.startswith("linux") else {})


def tune_allocator() -> None:
    for key, value in ALLOCATOR_DEFAULTS.items():
        os.environ.setdefault(key, value)


# A flow run of this command whose Prefect server stops answering: Prefect's client retries each request 5
# times, waiting 2, 4, 8, 16 and 32 s, so the run failed after 2.5 minutes (a progress update, then the failed
# state, each retried in turn). Two retries still ride out a few seconds of a busy server. Not for `worker`,
# which outlives a server's restart, nor for the flow runs it starts. Users' own settings win.
_PROMPT_DEFAULTS = {"PREFECT_CLIENT_MAX_RETRIES": "2"}
# After a run's commit, what the command sends Prefect is for the UI alone: its requests retry once (2 s), and
# a server that stopped answering makes the command leave at once (flows/prefect_server.py after_commit). It
# took 45 s: the reports' task tried three times, each request waiting out its two retries, then the flow run's
# final state waited them out too. Unless the user set PREFECT_CLIENT_MAX_RETRIES.
_AFTER_COMMIT_RETRIES = 1
_DEFAULTED: set[str] = set()  # the settings above that the user did not set
_AS_COMMAND = threading.Event()  # main() runs as the `pairwise` console script, which may leave at once


def _prepare_prefect(verbose: bool, runs_flow: bool) -> None:
    """Set quiet defaults before Prefect is imported (its logging reads them at import)."""
    for key, value in (_QUIET_DEFAULTS | (_PROMPT_DEFAULTS if runs_flow else {})).items():
        if key not in os.environ:
            _DEFAULTED.add(key)
        os.environ.setdefault(key, value)
    if not verbose:
        # only the console handler: logs still reach the API, and so the UI
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        # Prefect's services report each event or log batch they cannot send (its server gone) at ERROR, a
        # kilobyte each, and the log worker writes its failures to stderr unless logging.raiseExceptions is off
        os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "CRITICAL")
        logging.raiseExceptions = False


def _say(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def _print_report(db: str, run_id: str) -> None:
    from tasks.report import render_report

    print(render_report(db, run_id))


def _run(args: argparse.Namespace) -> int:
    from flows.params import TRUSTED_DASK, ReclassifyParams
    from tasks.run_log import count, rerun, source_notes, too_few_labels
    from tasks.runs import check_night_parents, check_stored_model, first_night, succeeded_before
    from tasks.sources import inspect_sources
    from tasks.store import check_export_dir, check_rerun, stored_model_row

    # a Dask address typed here is the user's own choice: no allow-list needed (flows/params.py)
    params = _validated(ReclassifyParams, args, context={TRUSTED_DASK: args.dask_address})
    params = params.for_workers()  # as the flow will: its check of the sources then finds this one's plan
    _check_db(params.db)
    if params.export_dir:
        check_export_dir(params.export_dir, params.db)
    labels_with_model = bool(params.model) and not first_night(params.db, params.model, params.incremental)
    if labels_with_model:
        stored_model_row(params.db, params.model)  # none such: refused here, not 10 s later once Prefect started
    plan = inspect_sources(params.items, params.classes, db=params.db, gold_column=params.gold_column,
                           chunk_size=params.chunk_size, changed_column=params.changed_column)
    # a model that does not fit the catalog, or whose files are gone or damaged, is bad input too: refused here
    # in one line (the flow's refusal came after Prefect's start and the first progress lines); held until the
    # flow ends, so that the flow's own check and its label tasks find it loaded (models.load_model)
    _held = check_stored_model.fn(plan, params.classes, params.db, params.model, params.graph_k,
                                  params.review) if labels_with_model else None
    if labels_with_model and params.incremental:  # a night under other parents than the labels it carries over
        check_night_parents(plan, params.db)
    rerunning = bool(params.run_id) and succeeded_before(params.db, params.run_id)
    if rerunning:  # refused alone, before the run's first line: bad input is one line
        check_rerun(params.db, params.run_id)
    _say(args, f"Reclassifying {count(plan.n_items, 'item')} into {count(len(plan.class_names), 'class', 'classes')}"
         f" ({', '.join(plan.modalities)}) -> {params.db}")
    for line in source_notes(plan):
        _say(args, line)
    if rerunning:  # the flow's warning reaches the UI alone
        _say(args, rerun(params.run_id))

    def run() -> dict[str, Any]:
        from flows.reclassify import reclassify_catalog

        return reclassify_catalog(params)

    summary = _flow_or_fail(args, params.db, run)
    if params.label_aware() and not params.model and summary["details"]["calibration"] == "label-free":
        _say(args, too_few_labels(params.gold_column, len(plan.modalities)))  # the flow's warning reaches the UI alone
    _show_report(args, params.db, summary)
    if summary.get("refit"):  # --refit-on-drift: a second run, whose report is its own
        _say(args, f"\nThe night drifted: run {summary['refit']} refitted the model on the whole catalog. Its "
             f"report: pairwise report --db {shlex.quote(params.db)} --run-id {summary['refit']}")
    return 0


def _check_db(db: str) -> None:
    """The --db checks of `run` and `demo` before Prefect starts: a folder, a file that is not DuckDB's, one the
    run could not write, another run writing it, a staging folder not the user's own are bad input, one line
    (the demo met them in its flow: after its progress lines, a folder as a failed run, exit 1)."""
    from tasks.staging import check_staging
    from tasks.store import check_db_file, check_run_lock, check_writable

    check_db_file(db)
    check_writable(db)
    check_run_lock(db)
    check_staging(db)


def _validated(model: type[BaseModel], args: argparse.Namespace, context: dict[str, Any] | None = None) -> Any:
    """The command's options as ``model`` takes them; its first complaint as one line naming the option."""
    from pydantic import ValidationError

    given = {name: getattr(args, name) for name in model.model_fields if getattr(args, name) is not None}
    try:
        return model.model_validate(given, context=context)
    except ValidationError as error:
        first = error.errors()[0]
        option = f"--{str(first['loc'][0]).replace('_', '-')}: " if first["loc"] else ""  # a check of several
        raise ValueError(f"{option}{first['msg'].removeprefix('Value error, ')}") from None


def _demo(args: argparse.Namespace) -> int:
    from flows.params import DemoParams

    from tasks.demo_catalog import check_demo_db

    _validated(DemoParams, args)  # before anything is written
    _check_db(args.db)
    check_demo_db(args.db)
    _say(args, f"Generating a synthetic catalog of {args.n_items} items, {args.n_classes} classes, into {args.db}, "
         "and reclassifying it (Prefect flow 'pairwise-demo')...")

    def run() -> dict[str, Any]:
        from flows.demo import demo

        return demo(**{name: getattr(args, name) for name in DemoParams.model_fields})

    summary = _flow_or_fail(args, args.db, run)
    _show_report(args, args.db, summary)
    _say(args, f"\nQuery it: {_query_command(args.db)}")
    return 0


def _query_command(db: str) -> str:
    """A shell command that prints a few rows of catalog_labels from ``db``, whatever its path: Python's literals
    in double quotes (JSON's are Python's too), the code in the shell's single quotes."""
    query = "SELECT * FROM catalog_labels LIMIT 5"
    code = f"import duckdb; print(duckdb.connect({json.dumps(db)}, read_only=True).sql({json.dumps(query)}))"
    return f"{shlex.quote(_python_command())} -c {shlex.quote(code)}"


def _python_command() -> str:
    """This interpreter as the user can type it here: relative below the working folder (.venv/bin/python from
    the checkout, as the README runs the demo), absolute elsewhere, where a relative path would not resolve."""
    relative = os.path.relpath(sys.executable)
    return sys.executable if relative.startswith("..") else relative


def _show_report(args: argparse.Namespace, db: str, summary: dict[str, Any]) -> None:
    """The report the run published (not queried again), and where its HTML version is; or, even with --quiet,
    why it has none (a warning in the Prefect log alone went unseen: exit 0 and no word of it)."""
    if summary.get("html_problem"):
        print(f"pairwise: {_one_line(Exception(summary['html_problem']))}", file=sys.stderr, flush=True)
    if args.quiet:
        return
    from tasks.folders import report_path

    print(summary["report"])
    path = report_path(db, summary["run_id"])
    if path.is_file():
        _say(args, f"\nHTML report with figures: {path}")


def _ours(db: str) -> bool:
    """Whether the DuckDB file ``db`` holds our tables (a file of the user's own tables, say for `table:` sources,
    holds none yet); ValueError, one line, if there is no such file or it is not a DuckDB file."""
    from tasks.store import check_db_file, connect, schema_version

    if not os.path.exists(db):
        raise ValueError(f"{db}: no such DuckDB file")
    check_db_file(db)
    with connect(db, read_only=True) as con:
        return schema_version(con) is not None


def _report(args: argparse.Namespace) -> int:
    import duckdb

    try:
        if not _ours(args.db):
            raise ValueError(f"{args.db}: no runs yet")
        if args.html:
            _write_html_report(args.db, args.run_id, args.html)
        else:
            _print_markdown_report(args.db, args.run_id)
    except duckdb.Error as error:  # not one of our files, or one a run is writing
        raise ValueError(f"{args.db}: cannot read it: {str(error).splitlines()[0]}") from None
    return 0


def _models(args: argparse.Namespace) -> int:
    """One line per stored model, newest first; with --remove or --keep, remove models first."""
    if args.remove is not None or args.keep is not None:
        return _remove_models(args)
    if args.dry_run:
        raise ValueError("--dry-run goes with --remove or --keep: alone, `pairwise models` only lists")
    rows = _listed(args.db, "report_models", "no stored models yet (a full run stores one)")
    from tasks.model_retention import folder_bytes
    from tasks.models import damage
    from tasks.run_log import count
    from tasks.store import stored_model_folder

    for row in rows:
        folder = stored_model_folder(args.db, row["model_id"])
        why = damage(folder, row["content_hash"], row["model_id"])
        gone = "" if why is None else f"  DAMAGED ({folder}): {why}"
        print(f"{row['model_id']}  run {row['run_id']}  fitted {row['fitted_at'].isoformat(timespec='seconds')}  "
              f"fitted on {count(row['n_items'], 'item')}  {count(row['n_classes'], 'class', 'classes')}  "
              f"{','.join(row['modalities'])}  labels {count(row['n_live'], 'live item')}  "
              f"{_megabytes(folder_bytes(folder))}{gone}")
    return 0


def _remove_models(args: argparse.Namespace) -> int:
    """``pairwise models --remove ID... | --keep N [--dry-run]``: a line per model removed (or that would be),
    per model past --keep that stays, and what is left."""
    from tasks.model_retention import remove_stored_models
    from tasks.run_log import count

    if not _ours(args.db):
        raise ValueError(f"{args.db}: no stored models yet (a full run stores one)")
    removal = remove_stored_models(args.db, args.remove, args.keep, args.dry_run)
    verb = "Would remove" if args.dry_run else "Removed"
    for row in removal.removed:
        print(f"{verb} {row['model_id']}  run {row['run_id']}  fitted {row['fitted_at'].isoformat(timespec='seconds')}"
              f"  {_megabytes(removal.sizes[row['model_id']])}")
    for row in removal.still_live:
        print(f"Kept {row['model_id']}: it still labels {row['n_live']:,} live items")
    freed = _megabytes(removal.freed())
    left = count(len(removal.left), "stored model")
    print(f"{'Nothing to remove' if not removal.removed else ('Would free ' if args.dry_run else 'Freed ') + freed}; "
          f"{left} {'would be ' if args.dry_run and removal.removed else ''}left")
    for folder in removal.stuck:
        print(f"pairwise: could not delete {folder} (its model's row is removed; the next removal or run deletes "
              "it once it can)", file=sys.stderr)
    return 1 if removal.stuck else 0


def _runs(args: argparse.Namespace) -> int:
    """One line per run, newest first; with --keep, remove the older runs first."""
    from tasks.run_log import count
    from tasks.run_retention import remove_old_runs

    if args.keep is not None:
        if not _ours(args.db):
            raise ValueError(f"{args.db}: no runs yet")
        removal = remove_old_runs(args.db, args.keep, args.dry_run)
        verb = "Would remove" if args.dry_run else "Removed"
        for row in removal.removed:
            print(f"{verb} {_run_line(row)}")
        for row, why in removal.stayed:
            print(f"Kept {row['run_id']}: {why}")
        done = f"{verb} {count(len(removal.removed), 'run')}" if removal.removed else "Nothing to remove"
        print(f"{done}; {count(removal.left, 'run')} {'would be ' if args.dry_run and removal.removed else ''}left")
        return 0
    if args.dry_run:
        raise ValueError("--dry-run goes with --keep: alone, `pairwise runs` only lists")
    for row in _listed(args.db, "report_runs", "no runs yet"):
        items = "" if row["n_items"] is None else f"  {count(row['n_items'], 'item')}"  # NULL until it succeeds
        print(f"{_run_line(row)}{items}  model {row['model_id'] or '-'}  labels {count(row['n_live'], 'live item')}")
    return 0


def _listed(db: str, listing: str, none: str) -> list[dict[str, Any]]:
    """The rows of a listing statement (`pairwise models`, `pairwise runs`); ``none`` on stderr when there are none."""
    import duckdb

    from tasks.store import query

    try:
        rows = query(db, listing).to_pylist() if _ours(db) else []
    except duckdb.Error as error:  # not one of our files, or one a run is writing
        raise ValueError(f"{db}: cannot read it: {str(error).splitlines()[0]}") from None
    if not rows:
        print(f"{db}: {none}", file=sys.stderr)
    return rows


def _run_line(row: dict[str, Any]) -> str:
    return f"{row['run_id']}  {row['status']}  started {row['started_at'].isoformat(timespec='seconds')}"


def _megabytes(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _print_markdown_report(db: str, run_id: str | None) -> None:
    from tasks.report import latest_run_id

    run_id = run_id or latest_run_id(db)
    if run_id is None:
        raise ValueError(f"{db}: no runs yet")
    _print_report(db, run_id)


def _write_html_report(db: str, run_id: str | None, path: str) -> None:
    """The latest succeeded run by default: a running or failed run has no figures to show."""
    from tasks.folders import check_not_kept
    from tasks.html_report import write_report
    from tasks.report import latest_run_id

    check_not_kept(path, db, "--html")
    folder = Path(path).parent
    if not folder.exists():  # a typo made folders anywhere (/nonexist at the root)
        raise ValueError(f"{path}: cannot write the report: no folder {folder}")
    run_id = run_id or latest_run_id(db, succeeded=True)
    if run_id is None:
        raise ValueError(f"{db}: no succeeded run yet")
    try:
        write_report(db, run_id, path)
    except OSError as error:
        blocked = next((parent for parent in Path(path).parents if parent.exists() and not parent.is_dir()), None)
        why = f"{blocked} is a file, not a folder" if blocked else error.strerror or error
        raise ValueError(f"{path}: cannot write the report: {why}") from None
    print(f"Wrote the HTML report of run {run_id} to {path}", file=sys.stderr)


def _classes(args: argparse.Namespace) -> int:
    from flows.classes import build_classes
    from pairwise_core.hierarchy import Level
    from tasks.run_log import count, parent_notes
    from tasks.sources import PARENT_COLUMN

    table = build_classes(args.names, args.template or [], args.encoder, modalities=args.modality or [],
                          out=args.out, db=args.db, table=args.table)
    modalities = [name.removesuffix("_embedding") for name in table.column_names if name.endswith("_embedding")]
    where = args.out or f"table:{args.table} in {args.db}"
    parents = Level.of(table.column(PARENT_COLUMN).to_pylist()) if PARENT_COLUMN in table.column_names else None
    under = f" under {count(len(parents.names), 'parent')}" if parents else ""
    _say(args, f"Wrote {table.num_rows} classes ({', '.join(modalities)}){under} to {where}")
    for line in parent_notes(table.column("class_name").to_pylist(), parents):
        _say(args, line)
    source = args.out or f"table:{args.table} --db {args.db}"
    _say(args, f"Use it: pairwise run --classes {source} ...")
    return 0


def _worker(args: argparse.Namespace) -> int:
    from prefect.settings import PREFECT_API_URL

    from flows.worker import start_worker

    if not PREFECT_API_URL.value():  # Prefect's worker started a temporary server, then died in a traceback
        raise ValueError("the worker takes its flow runs from a Prefect server: set PREFECT_API_URL to it "
                         "(export PREFECT_API_URL=http://127.0.0.1:4200/api for `prefect server start`)")
    return start_worker(args.pool, args.prefect_args)


def _flow_or_fail(args: argparse.Namespace, db: str, call: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a flow in this process, showing its progress; a failure becomes one line (the run's reason)."""
    from flows.prefect_server import start_temporary_server, unreachable

    began = datetime.now(timezone.utc)
    shown = ExitStack()  # the progress display

    def leave(gone: PrefectUnreachable) -> NoReturn:
        """Prefect stopped answering after the run's commit: the run stands, and what is left to do would only
        wait for that server (the flow run's final state). The display ends as on a failure, then the line."""
        failure = _prefect_gone(gone, db, began)
        shown.__exit__(type(gone), gone, None)
        print(f"pairwise: {_one_line(failure)}", file=sys.stderr)
        _leave_now(failure.exit_code)

    try:
        with _without_heartbeats(), _leaving_after_commit(leave), shown:
            if args.quiet:
                start_temporary_server()
                return call()
            from flows.progress import listening
            from flows.terminal import display

            listener = shown.enter_context(display(sys.stderr, plain=args.verbose))
            shown.enter_context(listening(listener))
            listener.phase("start Prefect")  # its temporary server, when no PREFECT_API_URL is set
            start_temporary_server()
            return call()
    except ValueError:
        raise
    except Exception as error:  # the run is marked failed with this reason in `runs`
        from tasks.store import ExportFailed, RunFailed, RunLocked

        # its own message and exit code: the run succeeded (ExportFailed), or another run took the lock between
        # the command's check and the flow's, and nothing of this one was written or recorded (RunLocked)
        if isinstance(error, ExportFailed | RunLocked):
            raise
        if (gone := unreachable(error)) is not None:
            raise _prefect_gone(gone, db, began) from None
        failed = error.__cause__ if isinstance(error, RunFailed) and error.__cause__ else error  # its own error
        raise RuntimeError(f"run failed: {type(failed).__name__}: {failed}".splitlines()[0]) from None


_PREFECT_GONE = threading.Event()  # the command's Prefect server stopped answering: leave at once (console)


class _PrefectGone(RuntimeError):
    """The Prefect server stopped answering, with the exit code of what the run came to (docs/running.md)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _prefect_gone(gone: PrefectUnreachable, db: str, began: datetime) -> _PrefectGone:
    """One line for a Prefect server gone, saying what this command's last run attempt in ``db`` came to, and
    what to do: no attempt, nothing written (2); failed, nothing committed (1); committed, and what followed
    failed (3)."""
    from prefect.settings import PREFECT_API_URL

    from tasks.runs import attempts_since

    _PREFECT_GONE.set()
    fix = "start the server, or unset PREFECT_API_URL to run on a temporary one, then " if PREFECT_API_URL.value() \
        else ""
    attempts = attempts_since(db, began)
    if not attempts:
        return _PrefectGone(f"{gone.server} does not answer ({gone.why}); no run started and nothing was written "
                            f"to {db}: {fix}run again", 2)
    run_id, status = attempts[-1]
    if status == "succeeded":  # its report and final state never reached Prefect
        return _PrefectGone(f"run {run_id} succeeded and is committed in {db}, but {gone} after its commit: the "
                            f"Prefect UI lacks its end (`pairwise report --db {shlex.quote(db)} --run-id {run_id}` "
                            "prints its report)", 3)
    recorded = "runs says why" if status == "failed" else "its attempt still reads running; the next run marks it " \
        "abandoned"
    return _PrefectGone(f"run {run_id} failed: {gone}; nothing of it was committed to {db} ({recorded}): {fix}run "
                        "it again", 1)


@contextmanager
def _leaving_after_commit(leave: Callable[[PrefectUnreachable], NoReturn]) -> Iterator[None]:
    """As the `pairwise` command (not main() called in a process of its own, a test's): Prefect's silence after
    a run's commit makes it ``leave`` at once, its requests there retrying _AFTER_COMMIT_RETRIES times."""
    if not _AS_COMMAND.is_set():
        yield
        return
    from flows.prefect_server import leaving_after_commit

    retries = _AFTER_COMMIT_RETRIES if "PREFECT_CLIENT_MAX_RETRIES" in _DEFAULTED else None
    with leaving_after_commit(leave, retries):
        yield


@contextmanager
def _without_heartbeats() -> Iterator[None]:
    """Flow runs of this process send no heartbeats, unless the user's Prefect settings set their frequency.

    A heartbeat lets a server's automation mark a deployment's run crashed when the machine under its worker
    dies; a run of this command has no worker, and the next run marks it abandoned in ``runs``. Prefect's
    sync engine joins its heartbeat thread as each flow run ends, and that thread sleeps in steps of 1 s:
    every run lasted 0-1 s more (a 1M relabel's wall time fell on steps of one second).
    """
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    if "heartbeat_frequency" in get_current_settings().flows.model_fields_set:
        yield
        return
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _strategy(text: str) -> str:
    return text.replace("-", "_")


_CONVERTERS = {"strategy": _strategy}  # round-robin as well as round_robin


def _at_least_one(text: str) -> int:
    """--keep's N: a whole number of at least 1 (the latest model, or the latest succeeded run, always stays)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (the latest always stays), got {value}")
    return value


class _Parser(argparse.ArgumentParser):
    """A parser whose errors are one line, as every other failure of the command is: argparse printed its usage
    first (22 lines for `pairwise run --strategy foo`), which scripts counting stderr lines took for a crash.
    `--help` still prints the usage in full."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class _Once(argparse.Action):
    """An option that takes one value, given once: a second --items silently replaced the first (a full run
    then marked every item of the first file deleted)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        seen = namespace.__dict__.setdefault("_given", set())
        if self.dest in seen:
            parser.error(f"{option_string} given twice: give it once")
        seen.add(self.dest)
        setattr(namespace, self.dest, values)


class _DefaultsShown(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, but not an unset one: "(default: None)" names a Python value the
    user never types, and the help already says what leaving the option out does."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def _add_fields(parser: argparse.ArgumentParser, model: type[BaseModel], *, required: Collection[str] = ()) -> None:
    """One option per field of ``model``: its description is the help and its default the default, so the
    CLI, the flow and the Prefect UI's form (which renders the same model) cannot drift apart."""
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if annotation is bool:
            kind: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        elif get_origin(annotation) is Literal:
            kind = {"choices": list(get_args(annotation)), "type": _CONVERTERS.get(name, str), "action": _Once}
            if name in _CONVERTERS:  # shown as the contract spells them: {tourney,round-robin}
                kind["metavar"] = "{" + ",".join(choice.replace("_", "-") for choice in kind["choices"]) + "}"
        else:
            kind = {"type": next(t for t in (*get_args(annotation), annotation) if t is not type(None)),
                    "action": _Once}
        if field.is_required() or name in required:
            kind |= {"required": True, "default": argparse.SUPPRESS}  # no "(default: ...)" then
        else:
            kind["default"] = field.default
        parser.add_argument(f"--{name.replace('_', '-')}", help=_as_option_help(field.description), **kind)


def _as_option_help(description: str | None) -> str | None:
    """A field's description as the other commands' help reads: lower case first ("items: ..."), as argparse's
    own; the Prefect UI's form shows it capitalised. A leading name that is spelled so ("DuckDB") stays."""
    first = description.split(maxsplit=1)[0] if description else ""
    if len(first) < 2 or any(c.isupper() for c in first[1:]):
        return description
    return description[0].lower() + description[1:]


def build_parser() -> argparse.ArgumentParser:
    from flows.params import DemoParams, ReclassifyParams

    parser = _Parser(prog="pairwise", description="Zero-shot catalog reclassification.")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="reclassify a catalog and write the output tables to a DuckDB file",
                              formatter_class=_DefaultsShown)
    _add_fields(run, ReclassifyParams, required={"db"})  # the CLI names the output file, never guesses it
    run.set_defaults(handler=_run)

    demo = commands.add_parser("demo", help="reclassify a synthetic demo catalog and print the report",
                               formatter_class=_DefaultsShown)
    _add_fields(demo, DemoParams)
    demo.set_defaults(handler=_demo)

    report = commands.add_parser("report", help="print the report of the latest (or a given) run",
                                 formatter_class=_DefaultsShown)
    report.add_argument("--db", action=_Once, required=True, default=argparse.SUPPRESS,
                        help="DuckDB file the runs wrote to")
    report.add_argument("--run-id", action=_Once,
                        help="the run; unset: the latest run (with --html, the latest succeeded run)")
    report.add_argument("--html", action=_Once, metavar="PATH",
                        help="write a self-contained HTML report with figures to PATH; unset: print Markdown")
    report.set_defaults(handler=_report)

    models = commands.add_parser("models", help="list the stored models: id, run, fitted at, items, classes, "
                                                 "modalities")
    models.add_argument("--db", action=_Once, required=True, default=argparse.SUPPRESS,
                        help="DuckDB file the runs wrote to")
    removing = models.add_mutually_exclusive_group()
    removing.add_argument("--remove", nargs="+", metavar="MODEL_ID",
                          help="remove these models, row and files; refused for the latest and for a model that "
                               "still labels live items (catalog_labels.model_id)")
    removing.add_argument("--keep", type=_at_least_one, metavar="N",
                          help="remove every model but the newest N, except those that still label live items")
    models.add_argument("--dry-run", action="store_true", help="with --remove or --keep: say what would go, remove "
                                                               "nothing")
    models.set_defaults(handler=_models)

    runs = commands.add_parser("runs", help="list the runs: id, status, started at, items, model, live items")
    runs.add_argument("--db", action=_Once, required=True, default=argparse.SUPPRESS,
                      help="DuckDB file the runs wrote to")
    runs.add_argument("--keep", type=_at_least_one, metavar="N",
                      help="remove every run older than the newest N succeeded ones, all its rows and its HTML "
                           "report, except runs that still label live items or fitted a stored model")
    runs.add_argument("--dry-run", action="store_true", help="with --keep: say what would go, remove nothing")
    runs.set_defaults(handler=_runs)

    for sub in (run, demo):
        sub.add_argument("--quiet", action="store_true",
                         help="print nothing but errors: no progress, no report (`pairwise report` prints it)")
        sub.add_argument("--verbose", action="store_true",
                         help="show Prefect's own console logs, and progress as plain lines")

    classes = commands.add_parser(
        "classes", help="embed class names through prompt templates into a classes table for `run --classes`")
    classes.add_argument("--names", action=_Once, required=True, metavar="FILE",
                         help="class names: a text file, one a line (blank lines skipped), or leaf<TAB>parent "
                              "on every line for a parent level, without a header line; or a .csv or .parquet "
                              "file with a class_name, class or name column (the first found) and an optional "
                              "parent column")
    classes.add_argument("--encoder", required=True, action="append", metavar="[MODALITY=]SPEC",
                         help="sentence-transformers:NAME_OR_FOLDER (or a bare folder), open_clip:MODEL/PRETRAINED, "
                              "hf-clip:NAME_OR_FOLDER, or python:MODULE:FUNCTION (list[str] -> (n, d) array); "
                              "once, or once per modality with a MODALITY= prefix (no default)")
    classes.add_argument("--template", action="append", metavar="[MODALITY=]TEMPLATE",
                         help="prompt with {} for the class name and {article} for a/an, e.g. image='a photo of "
                              "{article} {}.'; repeat for an ensemble (each prompt normalized, averaged, "
                              "re-normalized); no prefix: every modality (default '{}', the name alone)")
    classes.add_argument("--modality", action="append", metavar="NAME",
                         help="a modality to write, as <NAME>_embedding, matching the items' columns; repeat for "
                              "several (default: the modalities the prefixes name, else text)")
    destination = classes.add_mutually_exclusive_group(required=True)
    destination.add_argument("--out", action=_Once, metavar="PATH",
                             help="Parquet file to write (replaced whole, never half-written)")
    destination.add_argument("--db", action=_Once, metavar="PATH", help="DuckDB file to write the table --table into")
    classes.add_argument("--table", action=_Once, default="classes",
                         help="table name in --db, read by `run --classes table:NAME` (default classes)")
    classes.set_defaults(handler=_classes)

    worker = commands.add_parser(
        "worker", help="run the nightly deployment's flow runs: Prefect's worker, which one SIGTERM stops",
        description="`prefect worker start --pool POOL [OPTIONS]` (any other option is passed to it as it is), "
                    "stopped by one SIGTERM even when started in the background by a script or nohup")
    worker.add_argument("--pool", required=True, help="the work pool, e.g. pairwise (see prefect.yaml)")
    worker.set_defaults(handler=_worker, verbose=True)  # the worker's own and its flow runs' logs stay on
    return parser


INTERRUPTED = 130  # Ctrl-C's exit status


def _one_line(error: Exception) -> str:
    """An error's message on one line: a library's own may span several (a parser's caret diagram)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def _expanded_glob(extra: list[str]) -> str:
    """A hint when the arguments left over are files, as an unquoted glob leaves them: the shell expanded
    `--items catalog/items/*.parquet`, the option took the first file, and the others had no option."""
    if not all(os.path.isfile(arg) for arg in extra):
        return ""
    return " (files of an unquoted glob, which the shell expanded? quote it: --items 'catalog/items/*.parquet')"


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM: one line, then the default action (the exit status says which signal). Prefect's flow engine
    turns the signal into the run's failure first (recorded; nothing of the run visible), then hands it on
    to the handler it found: this one."""
    print("pairwise: terminated", file=sys.stderr, flush=True)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def main(argv: list[str] | None = None) -> int:
    tune_allocator()  # before the parser: its defaults come from modules that import pyarrow
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "worker":  # Prefect's worker handles its own signals
        args.prefect_args = extra
    elif extra:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}{_expanded_glob(extra)}")
    if args.command != "worker" and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    _prepare_prefect(getattr(args, "verbose", False), args.command in ("run", "demo"))  # `classes` runs no flow
    try:
        try:
            return args.handler(args)
        except Exception as error:  # a signal amid a DuckDB query: DuckDB raises its own error, not KeyboardInterrupt
            if interrupted(error) or terminated(error):
                raise KeyboardInterrupt from error
            raise
    except ValueError as error:  # bad input: one line, no traceback
        print(f"pairwise: {_one_line(error)}", file=sys.stderr)
        return 2
    except RuntimeError as error:
        print(f"pairwise: {_one_line(error)}", file=sys.stderr)
        return getattr(error, "exit_code", 1)  # an export failed after the commit: 3; a Prefect server gone: its own
    except KeyboardInterrupt as stopped:  # Ctrl-C: a run is committed whole or not at all: one line is all there is
        if terminated(stopped):  # SIGTERM that DuckDB wrapped (amid a query, or the COMMIT commit_run let stand)
            _terminated(signal.SIGTERM, None)
        print("pairwise: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:  # output piped into head & co.
        from flows.terminal import silence

        silence(sys.stdout)
        return 0


def console() -> NoReturn:
    """The ``pairwise`` command: main(), then exit without the interpreter's final garbage collections.

    Those walk every object that Prefect, pydantic and matplotlib created, for nothing: 0.8 s of a
    1M-item relabel's 17 s, after its last line was printed. gc.freeze() moves every object out of
    the collector's reach; atexit handlers (Prefect's log and event flushes), thread joins and
    module teardown still run as usual. Tests call main() and keep a normal collector.
    """
    _AS_COMMAND.set()
    code = main()
    if code == INTERRUPTED or _PREFECT_GONE.is_set():
        _leave_now(code)
    gc.freeze()
    sys.exit(code)


def _leave_now(code: int) -> NoReturn:
    """After Ctrl-C the run is recorded failed, but its task threads may be mid-partition: the interpreter's
    exit would wait for them, and they would log into a Prefect already shut down ("can't register atexit
    after shutdown", "Service 'EventsWorker' failed": tracebacks after the one line). After the Prefect server
    stopped answering, the exit would try to send every event still queued, a few seconds each, for minutes.
    Stop Prefect's temporary server and leave at once."""
    from flows.prefect_server import stop_temporary_server

    with suppress(Exception):
        stop_temporary_server()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    console()
