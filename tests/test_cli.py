"""The console script as a user runs it: real processes, Prefect's temporary server, no tracebacks."""

import argparse
import inspect
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import api, free_port, write_catalog
from pairwise_core import make_catalog

PAIRWISE = str(Path(sys.executable).with_name("pairwise"))
# root reads and writes anything: without the capabilities that let it (util-linux's setpriv), as a user would
AS_A_USER = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner"] if os.geteuid() == 0 else []


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**environment, "PREFECT_HOME": str(home)}


def pairwise(env, *args, timeout=300):
    return subprocess.run([PAIRWISE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_prints_a_clean_report_and_report_reads_it_back(env, tmp_path):
    db = tmp_path / "o'brien's $HOME" / "demo.duckdb"  # the printed command quotes it for the shell and Python
    result = pairwise(env, "demo", "--db", str(db), "--n-items", "3000")
    assert result.returncode == 0, result.stderr
    for noise in ("Traceback", "ERROR", "database is locked", "WARNING"):
        assert noise not in result.stdout + result.stderr
    assert "| agreement_f1_weighted | image    | text |" in result.stdout
    assert "| gold_accuracy         | joint    | gold |" in result.stdout
    assert "## Class shares" in result.stdout
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM current_labels").fetchone()[0] == 2 * 3000
    again = pairwise(env, "report", "--db", str(db))
    assert again.returncode == 0 and again.stdout.strip() == result.stdout.strip()
    # the demo's last words (on stderr, with its progress) are a command that runs as printed
    query = result.stderr.splitlines()[-1].removeprefix("Query it: ")
    shown = subprocess.run(query, shell=True, env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "catalog_labels" not in shown.stderr and "item-" in shown.stdout


def test_the_printed_query_reads_plainly_for_a_plain_path(tmp_path, monkeypatch):
    from flows.cli import _query_command

    monkeypatch.chdir(Path(sys.executable).parents[2])
    assert _query_command("pairwise-demo.duckdb") == (
        f"{os.path.join(*Path(sys.executable).parts[-3:])} -c 'import duckdb; print(duckdb.connect("
        '"pairwise-demo.duckdb", read_only=True).sql("SELECT * FROM catalog_labels LIMIT 5"))\'')


def test_the_printed_python_resolves_from_the_working_folder(tmp_path, monkeypatch):
    from flows.cli import _python_command

    monkeypatch.chdir(Path(sys.executable).parents[2])  # the folder holding the venv, as the README runs it
    assert _python_command() == os.path.join(*Path(sys.executable).parts[-3:])
    monkeypatch.chdir(tmp_path)  # elsewhere: the absolute path
    assert _python_command() == sys.executable and Path(_python_command()).exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--items", "missing.parquet"], "pairwise: missing.parquet: no such file"),
        (["--items", ""], "pairwise: --items: String should have at least 1 character\n"),  # was ": no such file"
        (["--db", ""], "pairwise: --db: String should have at least 1 character\n"),
        (["--gold-column", "nope"], "--gold-column nope: no such column; the items have item_id, image_embedding, "
                                    "text_embedding, label\n"),
        (["--run-id", "x; DROP TABLE runs"], "pairwise: --run-id: 'x; DROP TABLE runs': letters, digits, '.', '_' "
                                             "and '-' only, starting with a letter or digit, at most 128 characters\n"),
        (["--model", "../m"], "pairwise: --model: '../m': letters, digits, '.', '_' and '-' only, starting"),
        (["--items", "table:items; DROP TABLE runs"], "no such table"),
        (["--min-items", "1"], "pairwise: --min-items: Input should be greater than or equal to 2"),
        (["--max-dims", "8"], "pairwise: max_dims (8) must be >= min_dims (32)"),
        (["--refine-eps", "0"], "pairwise: --refine-eps: Input should be greater than 0"),  # NaN posteriors
        # not a bound it fails: NaN is no number; inf passed to fail the started run in the core (exit 1)
        # folded into 64-bit item hashes: a larger one failed the started run (OverflowError, exit 1)
        (["--seed", str(2**64)], "pairwise: --seed: Input should be less than or equal to 18446744073709551615\n"),
        (["--cutoff", "nan"], "pairwise: --cutoff: Input should be a finite number\n"),
        (["--cutoff", "inf"], "pairwise: --cutoff: Input should be a finite number\n"),
        (["--score-floor", "nan"], "pairwise: --score-floor: Input should be a finite number\n"),
        (["--review", "zero-shot"], "pairwise: --review zero-shot reviews the given labels: add --gold-column"),
        (["--db", "."], "pairwise: --db .: a folder, not a DuckDB file"),
        (["--db", "README.md"], "pairwise: --db README.md: not a DuckDB file"),
        (["--dask-address", "notanaddress"], "pairwise: --dask-address: notanaddress: not a Dask scheduler address, "
                                             "expected tcp://HOST:PORT (missing port number in address"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(env, tmp_path, args, message):
    items, classes = make_catalog(300, 3, seed=1)
    items_glob, classes_path = write_catalog(tmp_path, items, classes)
    given = {"--items": items_glob, "--classes": classes_path, "--db": str(tmp_path / "out.duckdb")}
    given.update(dict(zip(args[::2], args[1::2], strict=True)))
    if given["--items"].startswith("table:"):
        with duckdb.connect(given["--db"]) as con:
            con.execute("CREATE TABLE runs AS SELECT 1 AS keep")
    result = pairwise(env, "run", *[x for pair in given.items() for x in pair])
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr
    if given["--items"].startswith("table:"):
        with duckdb.connect(given["--db"], read_only=True) as con:
            assert con.execute("SELECT keep FROM runs").fetchall() == [(1,)]
    elif given["--db"] == str(tmp_path / "out.duckdb"):
        assert not (tmp_path / "out.duckdb").exists()  # nothing written: no failed row in runs either


@pytest.mark.parametrize("scheme", ["gs", "s3"])
def test_an_object_store_out_of_reach_is_one_line_and_exit_2_in_bounded_time(env, tmp_path, scheme):
    # no network here (nor credentials): pyarrow's GCS client retried a request for 15 minutes, silently;
    # now for tasks.sources.GCS_RETRY_LIMIT_S (10 s)
    _, classes_path = write_catalog(tmp_path, *make_catalog(30, 3, seed=1))
    began = time.monotonic()
    result = pairwise(env, "run", "--items", f"{scheme}://b/items/*.parquet", "--classes", classes_path,
                      "--db", str(tmp_path / "out.duckdb"), "--quiet", timeout=120)
    elapsed = time.monotonic() - began
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr.startswith(f"pairwise: {scheme}://b/items/*.parquet: cannot list (") and \
        result.stderr.count("\n") == 1, result.stderr
    assert len(result.stderr) < 1000  # not the kilobyte of GCS's metadata dump
    assert elapsed < 40, elapsed  # one listing (the retry limit) and the interpreter's start: 8-13 s here
    assert not (tmp_path / "out.duckdb").exists()


def test_a_column_the_run_reads_named_twice_is_bad_input_before_the_run_registers(env, tmp_path):
    """Two version columns with --changed-column version: the run registered, then failed (exit 1, a failed row in
    runs: KeyError: 'Field "version" exists 2 times in schema'); two gold columns: a traceback ending in
    "KeyError: 'Column label does not exist in schema'"."""
    items, classes = make_catalog(300, 3, seed=1)
    items = items.append_column("version", pa.array(["v1"] * items.num_rows))
    items_glob, classes_path = write_catalog(tmp_path, items, classes)
    db = tmp_path / "out.duckdb"
    first = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--run-id", "A",
                     "--changed-column", "version", "--quiet")
    assert first.returncode == 0, first.stderr
    for column, option in [("version", "--changed-column"), ("label", "--gold-column")]:
        path = tmp_path / f"twice-{column}.parquet"
        twice = pa.array([f"{column}-2"] * items.num_rows)
        pq.write_table(pa.Table.from_arrays([*items.columns, twice], names=[*items.column_names, column]), path)
        for target in (db, tmp_path / f"new-{column}.duckdb"):
            result = pairwise(env, "run", "--items", str(path), "--classes", classes_path, "--db", str(target),
                              "--run-id", "B", option, column, "--quiet")
            assert (result.returncode, result.stdout) == (2, ""), result.stderr
            assert result.stderr == (f"pairwise: {path}: column {column} appears 2 times; the run reads it by name, "
                                     "so it must appear once\n")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("A", "succeeded")]
    assert not (tmp_path / "new-version.duckdb").exists() and not (tmp_path / "new-label.duckdb").exists()


def test_a_run_that_fails_after_it_started_exits_1_even_on_what_reads_as_bad_input(env, tmp_path):
    # a source file gone mid-run is a SourceError (bad input, had validation found it) raised after the run's
    # row was written: exit 2 would say nothing was written
    items, classes = make_catalog(20_000, 5, seed=8)
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=4)
    db = tmp_path / "o.duckdb"
    process = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                                "--chunk-size", "1000", "--run-id", "gone"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:  # plain progress lines: once the first pass is under way, a file goes
        seen.append(line)
        if "pass 1/2: pair statistics" in line:
            break
    (tmp_path / "items-3.parquet").unlink()  # pass 2 opens every file again, whatever pass 1 did
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 1, "".join(seen) + rest
    last = rest.splitlines()[-1]
    assert last.startswith(f"pairwise: run failed: SourceError: {tmp_path / 'items-3.parquet'}: not a readable "
                           "Parquet file") and "Traceback" not in rest, rest
    with duckdb.connect(str(db), read_only=True) as con:
        (status, error), = con.execute("SELECT status, error FROM runs").fetchall()
    assert (status, last) == ("failed", f"pairwise: run failed: {error}")  # the reason runs records


def test_a_stored_model_that_is_not_there_is_refused_before_prefect_starts(env, tmp_path):
    """The refusal took 10 s: it came from the flow, once Prefect's temporary server had started. With an API
    nothing answers, the flow would fail on it; the command refuses first."""
    items_glob, classes_path = write_catalog(tmp_path, *make_catalog(300, 3, seed=1))
    db = tmp_path / "o.duckdb"
    unreachable = {**env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # the discard port: nothing listens
    result = pairwise(unreachable, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                      "--model", "latest")
    assert (result.returncode, result.stderr) == (2, f"pairwise: model latest: {db} holds no stored model yet: a full "
                                                     "run (without --model) fits and stores one\n")
    assert not db.exists()


def test_report_without_runs_says_so(env, tmp_path):
    result = pairwise(env, "report", "--db", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2 and "no such DuckDB file" in result.stderr
    own = tmp_path / "own.duckdb"  # the user's own tables only, say for table: sources
    with duckdb.connect(str(own)) as con:
        con.execute("CREATE TABLE my_items AS SELECT 'a' AS item_id")
    report = pairwise(env, "report", "--db", str(own))
    assert (report.returncode, report.stderr) == (2, f"pairwise: {own}: no runs yet\n")
    models = pairwise(env, "models", "--db", str(own))
    assert (models.returncode, models.stderr) == (0, f"{own}: no stored models yet (a full run stores one)\n")
    folder = pairwise(env, "report", "--db", str(tmp_path))
    assert (folder.returncode, folder.stderr) == (2, f"pairwise: --db {tmp_path}: a folder, not a DuckDB file\n")


def test_a_second_run_on_the_same_file_fails_at_once_while_the_first_holds_it(env, tmp_path):
    from tasks.store import run_lock

    items, classes = make_catalog(2000, 5, seed=5)
    items_glob, classes_path = write_catalog(tmp_path, items, classes)
    db = tmp_path / "out.duckdb"
    args = ["run", "--items", items_glob, "--classes", classes_path, "--db", str(db)]
    with run_lock(db):  # this test process plays the first run, mid-way
        second = pairwise(env, *args, "--run-id", "second")
    assert second.returncode == 1
    # one line, before Prefect starts (it failed in the flow, after a temporary server's start: 12.8 s)
    assert second.stderr.startswith("pairwise: another run is writing") and second.stderr.count("\n") == 1
    assert f"pid {os.getpid()}" in second.stderr
    assert not db.exists()  # nothing was written
    after = pairwise(env, *args, "--run-id", "after")  # once the lock is free, the next run goes through
    folder = tmp_path / "other.duckdb.lock"
    folder.mkdir()  # a run failed on it after Prefect's start, with "IsADirectoryError: [Errno 21] ..."
    odd = pairwise(env, *args[:-1], str(tmp_path / "other.duckdb"))
    assert (odd.returncode, odd.stderr) == (2, f"pairwise: {folder}: not a lock file but a folder; remove it\n")
    assert after.returncode == 0, after.stderr

    precious = tmp_path / "elsewhere.conf"  # a link planted where the lock goes: the run truncated its target
    precious.write_text("precious\n")
    for name, link, what in (("sym", Path.symlink_to, "a symbolic link; refusing to use it (remove the link)"),
                             ("hard", Path.hardlink_to, "a hard link to another file; refusing to use it (remove it)")):
        lock = tmp_path / f"{name}.duckdb.lock"
        link(lock, precious)
        linked = pairwise(env, *args[:-1], str(tmp_path / f"{name}.duckdb"))
        assert (linked.returncode, linked.stderr) == (2, f"pairwise: {lock}: the run lock is {what}\n")
        with pytest.raises(ValueError, match="the run lock is"), run_lock(tmp_path / f"{name}.duckdb"):
            pass  # the flow's own lock (a deployment's run) refuses it too
        assert precious.read_text() == "precious\n" and not (tmp_path / f"{name}.duckdb").exists()


def test_every_option_has_help_that_ends_with_its_default_taken_from_the_params_unless_unset(monkeypatch):
    from flows.cli import build_parser
    from flows.demo import demo
    from flows.params import DemoParams, ReclassifyParams

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no wrapping inside a help text
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name, params in (("run", ReclassifyParams), ("demo", DemoParams), ("report", None)):
        parser = commands[name]
        text = parser.format_help()
        options = [a for a in parser._actions if a.option_strings and a.dest != "help"]
        assert len(options) >= (len(params.model_fields) if params else 3)
        for action in options:
            assert action.help, f"{name} {action.option_strings[0]} has no help"
            first = action.help.split()[0]  # lower case first, as argparse's own, but a name spelled so (DuckDB)
            assert not first[0].isupper() or any(c.isupper() for c in first[1:]), f"{name} {action.help}"
            if action.required:
                assert action.default is argparse.SUPPRESS and f"{action.help} (default" not in text
                continue
            if action.default is None:  # unset: the help says what that does, and no Python "None" follows it
                assert action.help in text and f"{action.help} (default" not in text
                assert "None" not in action.help, f"{name} {action.option_strings[0]}"
            else:
                assert f"{action.help} (default: {action.default})" in text, f"{name} {action.option_strings[0]}"
            if params and action.dest in params.model_fields:
                assert action.default == params.model_fields[action.dest].default
    # the demo flow's own defaults are the demo command's
    assert {k: p.default for k, p in inspect.signature(demo.fn).parameters.items()} == DemoParams().model_dump()


def test_runs_of_the_command_send_no_heartbeats_unless_the_user_sets_their_frequency():
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, get_current_settings, temporary_settings

    from flows.cli import _without_heartbeats

    default = get_current_settings().flows.heartbeat_frequency
    assert default is not None  # Prefect's default sends them (and joins their thread as each run ends)
    with _without_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency is None
    assert get_current_settings().flows.heartbeat_frequency == default
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: 45}), _without_heartbeats():
        assert get_current_settings().flows.heartbeat_frequency == 45


def write_small_catalog(tmp_path):
    """2,000 items in row groups of 500: four partitions with --chunk-size 500."""
    items, classes = make_catalog(2000, 4, seed=3)
    return write_catalog(tmp_path, items, classes, row_group_size=500)


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(env, tmp_path):
    items_glob, classes_path = write_small_catalog(tmp_path)
    result = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(tmp_path / "o.duckdb"),
                      "--gold-column", "label", "--chunk-size", "500")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stderr and "\r" not in result.stderr  # nothing redrawn
    lines = result.stderr.splitlines()
    assert lines[0] == "Reclassifying 2,000 items into 4 classes (image, text) -> " + str(tmp_path / "o.duckdb")
    progress = [line.split("] ", 1)[1] for line in lines if re.match(r"\[\d+:\d\d\] ", line)]
    phases = [line for line in progress if ": " not in line]
    assert phases == ["start Prefect", "validate the sources", "stage the sources", "fit the masks",
                      "fit the refinement", "fit the review", "metrics", "review the gold labels", "commit",
                      "reports", "finished"]
    for n, name in ((1, "pair statistics"), (2, "labels")):
        assert f"pass {n}/2: {name}: 2,000 items in 4 partitions" in progress
        assert any(re.fullmatch(rf"pass {n}/2: {name}: done, 2,000 items in [\d.]+ s \([\d,]+ items/s\)", line)
                   for line in progress), progress
    assert "# Run " in result.stdout  # the report still goes to stdout


def test_quiet_prints_nothing_but_errors(env, tmp_path):
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    args = ["run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet"]
    result = pairwise(env, *args)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", "")
    with duckdb.connect(str(db), read_only=True) as con:  # the run did happen
        assert con.execute("SELECT count(*) FROM current_labels").fetchone()[0] == 2 * 2000
    bad = pairwise(env, *args, "--min-items", "1")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "pairwise: --min-items: Input should be greater than or equal to 2\n"
    twice = pairwise(env, *args, "--items", args[args.index("--items") + 1])  # the last one won, silently
    assert twice.returncode == 2 and twice.stderr.endswith("pairwise run: error: --items given twice: give it once\n")
    twice = pairwise(env, "report", "--db", str(db), "--html", "a.html", "--html", "b.html")
    assert twice.returncode == 2 and twice.stderr.endswith("pairwise report: error: --html given twice: give it once\n")


def test_an_unquoted_glob_is_named_as_such_by_the_command(env, tmp_path):
    """`--items items/*.parquet` without quotes: the shell gives the option the first file and leaves the others,
    which were refused as `unrecognized arguments` under the usage of `pairwise` itself, whatever the command."""
    files = [tmp_path / f"part-{k}.parquet" for k in range(3)]
    for path in files:
        pq.write_table(pa.table({"item_id": ["a"]}), path)
    result = pairwise(env, "run", "--items", *map(str, files), "--classes", "c.parquet", "--db", str(tmp_path / "o"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert result.stderr.endswith(f"pairwise run: error: unrecognized arguments: {files[1]} {files[2]} (files of an "
                                  "unquoted glob, which the shell expanded? quote it: --items "
                                  "'catalog/items/*.parquet')\n")
    other = pairwise(env, "report", "--db", str(tmp_path / "o"), "--bogus")
    assert other.returncode == 2 and other.stderr == "pairwise report: error: unrecognized arguments: --bogus\n"
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run", "--strategy", "foo"], "pairwise run: error: argument --strategy: invalid choice: 'foo' (choose from "
                                       "'tourney', 'round_robin')"),
        (["run", "--seed", "abc"], "pairwise run: error: argument --seed: invalid int value: 'abc'"),
        (["run", "--graph-k", "x"], "pairwise run: error: argument --graph-k: invalid int value: 'x'"),
        (["run"], "pairwise run: error: the following arguments are required: --items, --classes, --db"),
        (["report"], "pairwise report: error: the following arguments are required: --db"),
        (["models", "--keep", "0"], "pairwise models: error: argument --keep: must be at least 1 (the latest "
                                    "always stays), got 0"),
        ([], "pairwise: error: the following arguments are required: command"),
    ],
)
def test_an_option_the_parser_refuses_is_one_line_too(env, args, line):
    """The contract's one-line reason holds for the parser's refusals as well: argparse printed its usage
    before them (22 lines for an unknown --strategy), and a script counting stderr lines saw a crash."""
    result = pairwise(env, *args, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n")


def test_a_worker_without_a_prefect_server_to_ask_says_so_in_one_line(env):
    """Without PREFECT_API_URL (a new shell, not the one that exported it), Prefect's worker started a temporary
    server and created the work pool on it, then ended in a 30-line traceback."""
    result = pairwise(env, "worker", "--pool", "pairwise", timeout=120)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == ("pairwise: the worker takes its flow runs from a Prefect server: set PREFECT_API_URL to "
                             "it (export PREFECT_API_URL=http://127.0.0.1:4200/api for `prefect server start`)\n")


def interrupted_query() -> BaseException:
    """The error of a DuckDB query that SIGINT stopped on this thread, as Ctrl-C does."""
    running = threading.Event()

    def interrupt() -> None:
        running.wait()
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    sender = threading.Thread(target=interrupt)
    sender.start()
    try:
        with duckdb.connect() as con:
            running.set()
            con.execute("SELECT sum(a) FROM range(100000000000) t(a)").fetch_arrow_table()  # minutes
    except BaseException as error:  # noqa: BLE001 - the one DuckDB raised, whatever it is
        return error
    finally:
        sender.join()
        signal.signal(signal.SIGINT, previous)
    raise AssertionError("the query ended before the signal")


def test_an_interrupted_duckdb_query_is_an_interrupt_whatever_wraps_it():
    """Ctrl-C amid a query raises DuckDB's InterruptException, not KeyboardInterrupt: the command exited 1 with
    'Query interrupted' (or a run recorded it as its failure) instead of 130 and one line."""
    from prefect.states import Failed

    from prefect.exceptions import TerminationSignal

    from tasks.errors import interrupted, terminated
    from tasks.policy import is_transient

    try:
        try:
            raise duckdb.InterruptException("Query interrupted")
        except duckdb.Error as error:
            raise RuntimeError("run failed: InterruptException: Query interrupted") from error
    except RuntimeError as wrapped:
        assert interrupted(wrapped)
    assert interrupted(KeyboardInterrupt()) and not interrupted(ValueError("bad input"))
    # what DuckDB raises when Ctrl-C stops the query it runs on the main thread (a task run there): a task
    # retried it, the signal was gone, and the run its user stopped went on and committed (helper 60's 20)
    fetched = interrupted_query()
    assert str(fetched) == "Query interrupted" and interrupted(fetched)
    assert not interrupted(RuntimeError("Query interrupted by the user's own code"))
    assert not is_transient(None, None, Failed(data=fetched))
    assert not is_transient(None, None, Failed(data=duckdb.InterruptException("INTERRUPT Error: Interrupted!")))
    # SIGTERM: Prefect's handler raises its TerminationSignal, which DuckDB turns into the same error; the
    # command said "interrupted" and exited 130, not "terminated" and 143
    try:
        try:
            raise TerminationSignal(signal.SIGTERM)
        except TerminationSignal:
            raise RuntimeError("Query interrupted")  # noqa: B904 - DuckDB raises it during, not from
    except RuntimeError as during:
        assert terminated(during) and interrupted(during) and not terminated(fetched)
        # what commit_run raises when the signal came as its COMMIT went through (the run stands)
        try:
            raise KeyboardInterrupt("interrupted as run r committed; the run stands") from during
        except KeyboardInterrupt as standing:
            assert terminated(standing)
    assert is_transient(None, None, Failed(data=RuntimeError("a passing failure")))


def test_a_run_whose_console_reader_goes_away_goes_on_and_commits(env, tmp_path):
    """A tee or logger reading the run's lines dies: the run died on its next progress line, 'BrokenPipeError'
    its recorded reason, exit 1, and nobody left to read it (helper 60's finding 17)."""
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    run = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                            "--run-id", "r"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = run.stdout.readline()  # the reader reads a line, then goes away
    run.stdout.close()
    assert run.wait(timeout=300) == 0 and first.startswith(b"Reclassifying ")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs WHERE run_id = 'r'").fetchall() == [("succeeded", None)]


def test_a_lock_held_by_another_process_than_a_run_names_that_process(tmp_path):
    """A backup script that takes the run lock to copy the file (`flock out.duckdb.lock cp ...`): the line named
    the pid the last run wrote into the lock file, long gone, as the holder (helper 60's finding 4)."""
    from tasks.store import RunLocked, check_run_lock

    db = tmp_path / "out.duckdb"
    Path(f"{db}.lock").write_text("pid 4242 on elsewhere")  # what the last run wrote
    holder = subprocess.Popen(["flock", "--close", f"{db}.lock", "sleep", "60"])  # flock holds it, not sleep
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until flock holds it
            try:
                check_run_lock(db)
            except RunLocked as locked:
                message = str(locked)
                break
            time.sleep(0.05)
    finally:
        holder.kill()
        holder.wait()
    assert message.startswith(f"{db} is locked by another process (pid {holder.pid}: flock --close {tmp_path}")
    assert message.endswith("); try again when it has finished") and "4242" not in message
    check_run_lock(db)  # free again


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_that_meets_the_lock_inside_its_flow_says_so_as_the_commands_check_does(tmp_path):
    """Two runs started together both pass the command's early check; the one that met the lock in its flow said
    'run failed: RunLocked: ...', which reads as a failed run, yet nothing of it was recorded (helper 60's 16)."""
    from flows.cli import _flow_or_fail
    from flows.params import ReclassifyParams
    from flows.reclassify import reclassify_catalog
    from tasks.store import RunLocked, run_lock

    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "out.duckdb"
    params = ReclassifyParams(items=items_glob, classes=classes_path, db=str(db))
    with run_lock(db), pytest.raises(RunLocked, match=rf"^another run is writing {db} \(pid {os.getpid()} on "):
        _flow_or_fail(argparse.Namespace(quiet=True, verbose=False), str(db), lambda: reclassify_catalog(params))
    assert not db.exists()  # nothing written or recorded


def test_a_db_the_run_cannot_write_is_bad_input_before_anything_runs(env, tmp_path):
    """It was found at the run lock or the commit, after Prefect's start: 'run failed: PermissionError' or
    DuckDB's IOException, exit 1 (helper 60's finding 15); --export-dir was refused up front already."""
    items_glob, classes_path = write_small_catalog(tmp_path)
    closed, kept = tmp_path / "closed", tmp_path / "kept"
    closed.mkdir()
    kept.mkdir()
    duckdb.connect(str(kept / "o.duckdb")).close()
    os.chmod(closed, 0o555)
    os.chmod(kept / "o.duckdb", 0o444)
    for db, why in ((closed / "o.duckdb", f"cannot write in {closed} (a run writes its lock, DuckDB's write-ahead "
                                          "log and its staging folder there)"),
                    (kept / "o.duckdb", f"{kept / 'o.duckdb'} is read-only")):
        result = subprocess.run([*AS_A_USER, PAIRWISE, "run", "--items", items_glob, "--classes", classes_path,
                                 "--db", str(db), "--quiet"], env=env, capture_output=True, text=True, timeout=300)
        assert (result.returncode, result.stderr) == (2, f"pairwise: --db {db}: {why}\n")
    os.chmod(closed, 0o755)
    assert list(closed.iterdir()) == [] and list(kept.iterdir()) == [kept / "o.duckdb"]  # nothing written


def test_an_unreadable_source_file_or_folder_is_bad_input_named_in_one_line(env, tmp_path):
    """A folder the run cannot read was reported as a glob that 'matches no Parquet files' (a file in it as
    'no such file'), sending the user after the wrong problem."""
    items_glob, classes_path = write_small_catalog(tmp_path / "in")
    folder = tmp_path / "in"
    [first, *_] = sorted(folder.glob("items-*.parquet"))

    def run(items: str) -> subprocess.CompletedProcess:
        return subprocess.run([*AS_A_USER, PAIRWISE, "run", "--items", items, "--classes", str(tmp_path / "c.parquet"),
                               "--db", str(tmp_path / "o.duckdb"), "--quiet"], env=env, capture_output=True,
                              text=True, timeout=120)

    shutil.copyfile(classes_path, tmp_path / "c.parquet")
    os.chmod(first, 0)
    unreadable = run(str(first))
    os.chmod(first, 0o644)
    assert unreadable.returncode == 2 and unreadable.stderr.startswith(f"pairwise: {first}: cannot read (")
    os.chmod(folder, 0)
    listed = [run(items_glob), run(str(folder)), run(str(first))]
    os.chmod(folder, 0o755)
    for result, items in zip(listed, (items_glob, folder, first), strict=True):
        assert (result.returncode, result.stderr) == (
            2, f"pairwise: {items}: cannot read the folder {folder} (permission denied)\n")
    assert not (tmp_path / "o.duckdb").exists()


def test_a_run_whose_html_report_cannot_be_written_says_so_on_the_console(env, tmp_path):
    """The run stands (exit 0), but the console said nothing of the missing report: the warning reached the Prefect
    log alone (helper 60's finding 19)."""
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    Path(f"{db}.reports").write_text("")  # where the reports folder goes: a file
    result = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--run-id", "r",
                      "--quiet")
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == (f"pairwise: no HTML report for run r (the run is committed): FileExistsError: [Errno 17] "
                             f"File exists: '{db}.reports'\n")


def test_an_export_dir_that_cannot_be_one_is_bad_input_and_an_export_failing_after_the_commit_exits_3(env, tmp_path):
    """So is an output path among the database's own files (--export-dir, report --html)."""
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    args = ["run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--run-id", "r"]
    (tmp_path / "afile").write_text("")
    for target in ("afile", "afile/export"):
        bad = pairwise(env, *args, "--export-dir", str(tmp_path / target))
        assert (bad.returncode, bad.stdout) == (2, "")
        assert bad.stderr == f"pairwise: --export-dir: {tmp_path / 'afile'} is not a directory\n"
    for kept, what in ((".staging", "the database's staging folder, which every run clears"),
                       (".models/mine", "inside the database's model store, which every run clears of all but models")):
        bad = pairwise(env, *args, "--export-dir", f"{db}{kept}")  # the next run would delete the export
        assert (bad.returncode, bad.stdout) == (2, "")
        assert bad.stderr == f"pairwise: --export-dir: {db}{kept} is {what}; choose another path\n"
    uri = pairwise(env, *args, "--export-dir", "s3://bucket/export")  # not a local folder named "s3:"
    assert (uri.returncode, uri.stdout) == (2, "")
    assert uri.stderr == "pairwise: --export-dir: s3://bucket/export is a URI; the export writes to a local folder only\n"
    assert not db.exists() and not Path("s3:").exists()  # refused before anything was written

    (tmp_path / "export" / "runs.parquet").mkdir(parents=True)  # a folder it accepts, where runs.parquet fails
    late = pairwise(env, *args, "--quiet", "--export-dir", str(tmp_path / "export"))
    assert late.returncode == 3 and late.stdout == "" and late.stderr.count("\n") == 1, late.stderr
    assert late.stderr.startswith(f"pairwise: run r succeeded, but exporting it to {tmp_path / 'export'} failed: ")
    assert "runs.parquet is not a file" in late.stderr  # checked before any file is replaced
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r", "succeeded")]
    again = pairwise(env, *args)  # a run id that succeeded: a system that synced it must hear it is replaced
    assert again.returncode == 0 and "Run r had succeeded: this attempt replaces its rows" in again.stderr

    for target, what in ((db, "the database itself"), (f"{db}.wal", "the database's write-ahead log")):
        over = pairwise(env, "report", "--db", str(db), "--html", str(target))  # it replaced the database
        assert (over.returncode, over.stderr) == (2, f"pairwise: --html: {target} is {what}; choose another path\n")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("r", "succeeded")]


def started_run(env, tmp_path, db):
    """`pairwise run` in a session of its own (as a terminal's job), once its first pass is under way."""
    items, classes = make_catalog(20_000, 5, seed=8)
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=4)
    # a terminal's job gets SIGINT at its default; tests started in the background (`pytest &` from a script)
    # pass it on ignored, and the run would not hear the Ctrl-C sent to it (as any such process would not)
    previous = signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        process = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db",
                                    str(db), "--chunk-size", "1000", "--run-id", "stopped"], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    seen = []
    for line in process.stderr:  # plain progress lines
        seen.append(line)
        if "pass 1/2: pair statistics" in line:
            return process, seen
    raise AssertionError("".join(seen))


def temporary_servers(env) -> list[int]:
    """The pids of Prefect temporary servers started with this test module's PREFECT_HOME."""
    home = f"PREFECT_HOME={env['PREFECT_HOME']}".encode()
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with suppress(OSError):
            if b"create_app" in Path(f"/proc/{pid}/cmdline").read_bytes() \
                    and home in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
    return found


def test_ctrl_c_mid_run_is_one_line_exit_130_and_leaves_no_partial_run(env, tmp_path):
    db = tmp_path / "o.duckdb"
    process, seen = started_run(env, tmp_path, db)
    # a terminal's Ctrl-C signals the whole process group: Prefect's temporary server, in it, died too, and the
    # run retried its events against it for minutes, then blamed a ConnectError (flows/prefect_server.py)
    os.killpg(process.pid, signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, "".join(seen) + rest
    assert rest.splitlines()[-1] == "pairwise: interrupted" and "Traceback" not in rest and "ERROR" not in rest
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [("failed", "KeyboardInterrupt")]
        assert con.execute("SELECT count(*) FROM item_labels").fetchall() == [(0,)]


def test_sigterm_mid_run_is_one_line_and_the_signal_s_exit_and_leaves_no_partial_run(env, tmp_path):
    db = tmp_path / "t.duckdb"
    process, seen = started_run(env, tmp_path, db)
    process.terminate()  # what a scheduler or `kill` sends
    _, rest = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, "".join(seen) + rest  # 143 in a shell
    assert rest.splitlines()[-1] == "pairwise: terminated" and "Traceback" not in rest
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [("failed", "TerminationSignal")]
        assert con.execute("SELECT count(*) FROM item_labels").fetchall() == [(0,)]
    assert not Path(f"{db}.staging").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_run_leaves_no_temporary_server_behind(env, tmp_path):
    process, _ = started_run(env, tmp_path, tmp_path / "k.duckdb")
    assert temporary_servers(env)
    process.kill()
    process.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while temporary_servers(env) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not temporary_servers(env)  # it was left running, orphaned, after every SIGKILL or SIGTERM


@pytest.mark.parametrize(("stop", "settings", "why"), [
    # it waited out PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (120 s), then "run failed: RuntimeError: Timed
    # out while attempting to connect to ephemeral Prefect API server. Ephemeral server process exited with code -9."
    (signal.SIGKILL, {}, "it was killed by SIGKILL as it started"),
    # hung: as slow as on a busy machine, which the wait is for; then the same line, exit 1, "run failed"
    (signal.SIGSTOP, {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "3"},
     "not ready 3 s after its start: PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS sets the wait"),
])
def test_a_temporary_server_that_dies_or_hangs_as_it_starts_is_one_line_exit_2_and_nothing_written(
        env, tmp_path, stop, settings, why):
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    process = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                                "--quiet"], env={**env, **settings}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        while not (servers := temporary_servers(env)):  # as it starts: it takes seconds to answer
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
        os.kill(servers[0], stop)
        out, err = process.communicate(timeout=180)
    finally:
        for pid in temporary_servers(env):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert (process.returncode, out) == (2, ""), err
    assert err == (f"pairwise: Prefect's temporary server does not answer ({why}); no run started and nothing was "
                   f"written to {db}: run again\n")
    assert not db.exists()


def test_a_temporary_server_whose_database_is_damaged_is_one_line_exit_2_and_nothing_written(env, tmp_path):
    """Uvicorn exits with code 3 when the server's start fails (a damaged SQLite database here), which Prefect
    takes for its port taken: it started another server, and another, for the whole wait (120 s), then the
    command blamed a slow start. A second exit 3 on another port now ends the start in one line."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "prefect.db").write_text("garbage\n")
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    result = pairwise({**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60"},
                      "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet")
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == (
        "pairwise: Prefect's temporary server failed as it started, twice, on two ports (Uvicorn's exit code 3, "
        f"startup failed): its database ({home / 'prefect.db'}) may be damaged or unwritable: move it aside (Prefect "
        "makes a new one), or set PREFECT_HOME to another folder; no run started and nothing was written\n")
    assert not db.exists()


def test_a_prefect_server_that_does_not_answer_at_the_start_is_one_line_exit_2_and_nothing_written(env, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    result = pairwise({**env, "PREFECT_API_URL": url}, "run", "--items", items_glob, "--classes", classes_path,
                      "--db", str(db), "--quiet")
    assert (result.returncode, result.stdout) == (2, ""), result.stderr  # was exit 1, "run failed" with no run
    assert result.stderr == (f"pairwise: the Prefect server at {url} does not answer (ConnectError: [Errno 111] "
                             f"Connection refused); no run started and nothing was written to {db}: start the "
                             "server, or unset PREFECT_API_URL to run on a temporary one, then run again\n")
    assert not db.exists()


@contextmanager
def prefect_server(env, home: Path) -> Iterator[tuple[str, Callable[[], None]]]:
    """A real `prefect server start` of its own (URL, and a stop that kills it at once, as a crash would): the
    server goes away when the test stops it, and at the end whatever happened."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([str(Path(sys.executable).with_name("prefect")), "server", "start", "--host",
                               "127.0.0.1", "--port", str(port)], env={**env, "PREFECT_HOME": str(home),
                                                                       "PREFECT_UI_ENABLED": "false"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def stop() -> None:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=60)

    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                api(url, "/health")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "prefect server did not start"
                time.sleep(0.5)
        yield url, stop
    finally:
        stop()


def test_a_prefect_server_gone_mid_run_is_one_line_and_the_run_recorded_failed(env, tmp_path):
    home = tmp_path / "prefect-home"
    with prefect_server(env, home) as (url, stop):
        items, classes = make_catalog(20_000, 5, seed=8)
        items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=4)
        db = tmp_path / "o.duckdb"
        process = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                                    "--chunk-size", "1000", "--run-id", "gone", "--quiet"],
                                   env={**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": url},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not Path(f"{db}.staging/gone").exists():  # registered, and under way
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        stop()  # the server goes away mid-run
    # it retried each request, then each queued event at exit, for 2.5-8.5 minutes, and printed pages of them
    out, err = process.communicate(timeout=120)
    assert (process.returncode, out) == (1, ""), err
    assert err == (f"pairwise: run gone failed: the Prefect server at {url} stopped answering (ConnectError: [Errno "
                   f"111] Connection refused); nothing of it was committed to {db} (runs says why): start the "
                   "server, or unset PREFECT_API_URL to run on a temporary one, then run it again\n")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [
            ("failed", f"PrefectUnreachable: the Prefect server at {url} stopped answering (ConnectError: [Errno 111] "
                       "Connection refused)")]
        assert con.execute("SELECT count(*) FROM current_labels").fetchall() == [(0,)]


def killed_after_commit(env, tmp_path, *options: str, **settings: str) -> tuple[str, Path]:
    """A run (with ``options``, and ``settings`` in its environment) whose Prefect server is killed as its reports
    phase begins, its commit done, checked to exit 3 with its line: its standard error after the kill, and its
    DuckDB file."""
    home = tmp_path / "prefect-home"
    items_glob, classes_path = write_small_catalog(tmp_path)
    db = tmp_path / "o.duckdb"
    with prefect_server(env, home) as (url, stop):
        process = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                                    "--chunk-size", "500", "--run-id", "gone-late", *options],
                                   env={**env, "PREFECT_HOME": str(home), "PREFECT_API_URL": url, **settings},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = []
        for line in process.stderr:  # plain progress lines: "reports" begins once the commit is done
            seen.append(line)
            if line.endswith("] reports\n"):
                stop()
                break
        else:
            raise AssertionError("".join(seen))
    out, rest = process.communicate(timeout=120)
    assert (process.returncode, out) == (3, ""), "".join(seen) + rest
    assert rest.splitlines()[-1] == (
        f"pairwise: run gone-late succeeded and is committed in {db}, but the Prefect server at {url} stopped "
        f"answering (ConnectError: [Errno 111] Connection refused) after its commit: the Prefect UI lacks its end "
        f"(`pairwise report --db {db} --run-id gone-late` prints its report)")
    return rest, db


def test_a_prefect_server_gone_after_the_commit_is_exit_3_and_the_run_stands(env, tmp_path):
    """The server killed as the run's reports phase begins, its commit done: the publishing that follows (the
    report's artifacts, the flow run's final state) gets no answer. Exit 3, as after a failed export: the run
    is committed and readers see it; only the Prefect UI lacks its end."""
    rest, db = killed_after_commit(env, tmp_path)
    assert "Traceback" not in rest
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [("succeeded", None)]
        assert con.execute("SELECT count(*) FROM catalog_labels").fetchall() == [(2000,)]
    again = pairwise(env, "report", "--db", str(db), "--run-id", "gone-late")  # what the line tells the user to do
    assert again.returncode == 0 and again.stdout.startswith("# Run gone-late: succeeded"), again.stderr


def test_a_prefect_server_gone_after_the_commit_is_not_waited_out(env, tmp_path):
    """The command took 45 s to leave: the reports' task ran three times, each of its requests waiting out the
    client's two retries (2 s, then 4 s), and then the flow run's final state waited them out again. Prefect's
    own lines (--verbose, its client's at DEBUG) tell what it did: the task ran once, its request was retried
    once (attempt 1 of 2), and the command left without reporting the flow run's end to the silent server."""
    rest, _ = killed_after_commit(env, tmp_path, "--verbose", PREFECT_LOGGING_LEVEL="DEBUG")
    assert "Task run 'publish-artifacts-" in rest  # Prefect's lines are there
    assert "Retry 1/2 will start" not in rest  # the task: "Task run failed with exception: ConnectError(...) - ..."
    assert "This is attempt 1/2." in rest, rest[-3000:]  # the request: retried once (the command's 2: "1/3")
    assert "Flow run 'gone-late' - Finished in state" not in rest  # "Finished in state Running()", after waiting


def test_a_staging_folder_removed_mid_run_is_named_as_the_failure(env, tmp_path):
    db = tmp_path / "o.duckdb"
    items, classes = make_catalog(20_000, 5, seed=8)
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=4)
    process = subprocess.Popen([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                                "--chunk-size", "1000", "--run-id", "r"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = []
    for line in process.stderr:  # plain progress lines: once the second pass is under way, a cleanup job strikes
        seen.append(line)
        if "pass 2/2: labels" in line:
            break
    folder = Path(f"{db}.staging")
    # moved away whole, then removed: a removal still under way when a task fails leaves the folder there, and
    # the task's own error (a file missing) stands
    folder.rename(tmp_path / "swept")
    shutil.rmtree(tmp_path / "swept")
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 1, "".join(seen) + rest
    # it blamed the run: "RunEnded: its run ended and removed ... before the task finished", or FileNotFoundError
    reason = f"StagingGone: the staging folder {folder} disappeared while the run was using it: another process " \
             "removed or moved it"
    assert rest.splitlines()[-1] == f"pairwise: run failed: {reason}" and "Traceback" not in rest, rest
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [("failed", reason)]
        assert con.execute("SELECT count(*) FROM current_labels").fetchall() == [(0,)]


@pytest.mark.parametrize(("n_items", "said"), [(200, True), (2000, False)])
def test_a_confidence_asked_of_the_gold_labels_and_fitted_without_them_says_why(env, tmp_path, n_items, said):
    """With too few labelled items the calibration falls back to label-free: --calibration gold said nothing of it
    (exit 0, the report's last words only), though runs.params said gold and runs.details label-free."""
    items, classes = make_catalog(n_items, 4, seed=3)
    items_glob, classes_path = write_catalog(tmp_path, items, classes)
    db = tmp_path / "o.duckdb"
    result = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                      "--gold-column", "label", "--calibration", "gold")
    assert result.returncode == 0, result.stderr
    line = ("Confidence fitted without labels: gold column label has too few labelled items to fit it on (at least "
            "200 outside each of the seeded sample's 5 folds are needed)")
    assert (line in result.stderr.splitlines()) == said, result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        details = json.loads(con.execute("SELECT details FROM runs").fetchone()[0])
    assert details["calibration"] == ("label-free" if said else "gold")


@pytest.mark.parametrize(("option", "line"), [
    (["--n-items", "0"], "pairwise: --n-items: Input should be greater than or equal to 1"),
    (["--n-classes", "1"], "pairwise: --n-classes: Input should be greater than or equal to 2"),
    (["--seed", "-3"], "pairwise: --seed: Input should be greater than or equal to 0"),
    (["--seed", str(2**64)], "pairwise: --seed: Input should be less than or equal to 18446744073709551615"),
])
def test_demo_options_out_of_range_are_refused_by_name_before_anything_is_written(env, tmp_path, option, line):
    """They were refused by what they broke ('make_catalog needs n_items >= 1', 'table:demo_classes: 1 class(es)',
    'expected non-negative integer'), --n-classes 1 after writing the demo's tables."""
    db = tmp_path / "d.duckdb"
    result = pairwise(env, "demo", "--db", str(db), *option)
    assert (result.returncode, result.stderr) == (2, line + "\n")
    assert not db.exists()


def test_the_demo_refuses_a_file_that_holds_another_catalog_and_a_demo_file_takes_another_demo(env, tmp_path):
    """`pairwise demo --db catalog/pairwise.duckdb` ran its full run there: every item of the catalog was marked
    deleted (or relabelled, where the demo's item ids matched), and catalog_labels held the demo's labels."""
    items_glob, classes_path = write_catalog(tmp_path, *make_catalog(300, 3, seed=1))
    db = tmp_path / "catalog.duckdb"
    assert pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                    "--run-id", "nightly", "--quiet").returncode == 0
    before = db.read_bytes()
    result = pairwise(env, "demo", "--db", str(db), "--n-items", "300")
    assert (result.returncode, result.stdout, result.stderr) == (
        2, "", f"pairwise: --db {db}: holds runs of another catalog (run nightly, items {items_glob}): the demo "
               "would mark its items deleted; give the demo a file of its own\n")
    assert db.read_bytes() == before
    demo_db = tmp_path / "demo.duckdb"
    for _ in range(2):  # the demo's own file: its runs all read table:demo_items
        assert pairwise(env, "demo", "--db", str(demo_db), "--n-items", "300", "--quiet").returncode == 0


def test_a_demo_db_that_cannot_be_one_is_refused_in_one_line_before_prefect_starts(env, tmp_path):
    """As `pairwise run` refuses it: the demo met a folder in its flow, after its progress lines, as a failed run
    (exit 1, `run failed: IOException: ... Is a directory`), and a file that is not DuckDB's after them too."""
    other = tmp_path / "notes.txt"
    other.write_text("not a database\n")
    for db, line in ((tmp_path, f"pairwise: --db {tmp_path}: a folder, not a DuckDB file\n"),
                     (other, f"pairwise: --db {other}: not a DuckDB file\n")):
        result = pairwise(env, "demo", "--db", str(db), "--n-items", "100")
        assert (result.returncode, result.stdout, result.stderr) == (2, "", line)
    assert other.read_text() == "not a database\n"


def test_a_run_id_later_runs_built_on_is_refused_in_one_line(env, tmp_path):
    """The refusal came under the run's first line (`Reclassifying N items ... -> DB`): two lines for bad input."""
    items_glob, classes_path = write_catalog(tmp_path, *make_catalog(300, 3, seed=1))
    db = tmp_path / "o.duckdb"
    args = ["run", "--items", items_glob, "--classes", classes_path, "--db", str(db)]
    for run_id in ("first", "second"):
        assert pairwise(env, *args, "--run-id", run_id, "--quiet").returncode == 0
    again = pairwise(env, *args, "--run-id", "first")
    assert (again.returncode, again.stdout) == (2, "")
    assert again.stderr.startswith("pairwise: run first succeeded before and 1 later run (second) committed since")
    assert again.stderr.count("\n") == 1, again.stderr


def test_the_help_spells_the_strategies_as_the_contract_does(env):
    """`--strategy tourney|round-robin` in the contract; the help showed {tourney,round_robin} (both are taken)."""
    for command in ("run", "demo"):
        shown = pairwise(env, command, "--help", timeout=60)
        assert shown.returncode == 0 and "--strategy {tourney,round-robin}" in " ".join(shown.stdout.split())
