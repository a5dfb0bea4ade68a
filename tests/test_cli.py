"""The console script as a user runs it: real processes, Prefect's temporary server, no tracebacks."""

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import write_catalog
from pairwise_core import make_catalog

PAIRWISE = str(Path(sys.executable).with_name("pairwise"))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**environment, "PREFECT_HOME": str(home)}


def pairwise(env, *args, timeout=300):
    return subprocess.run([PAIRWISE, *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_demo_prints_a_clean_report_and_report_reads_it_back(env, tmp_path):
    db = tmp_path / "demo.duckdb"
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--items", "missing.parquet"], "pairwise: missing.parquet: no such file"),
        (["--gold-column", "nope"], "missing column nope"),
        (["--run-id", "x; DROP TABLE runs"], "pairwise: --run-id: String should match pattern"),
        (["--items", "table:items; DROP TABLE runs"], "no such table"),
        (["--min-items", "1"], "pairwise: --min-items: Input should be greater than or equal to 2"),
        (["--max-dims", "8"], "pairwise: max_dims (8) must be >= min_dims (32)"),
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


def test_report_without_runs_says_so(env, tmp_path):
    result = pairwise(env, "report", "--db", str(tmp_path / "none.duckdb"))
    assert result.returncode == 2 and "no such DuckDB file" in result.stderr


def test_a_second_run_on_the_same_file_fails_at_once_while_the_first_holds_it(env, tmp_path):
    from tasks.store import run_lock

    items, classes = make_catalog(2000, 5, seed=5)
    items_glob, classes_path = write_catalog(tmp_path, items, classes)
    db = tmp_path / "out.duckdb"
    args = ["run", "--items", items_glob, "--classes", classes_path, "--db", str(db)]
    with run_lock(db):  # this test process plays the first run, mid-way
        second = pairwise(env, *args, "--run-id", "second")
    assert second.returncode == 1
    last = second.stderr.strip().splitlines()[-1]  # after the "Reclassifying ..." line: one line, no traceback
    assert last.startswith("pairwise: run failed: RunLocked: another run is writing") and "Traceback" not in second.stderr
    assert f"pid {os.getpid()}" in last
    assert not db.exists()  # nothing was written
    after = pairwise(env, *args, "--run-id", "after")  # once the lock is free, the next run goes through
    assert after.returncode == 0, after.stderr
