"""Removing old runs: `pairwise runs --keep` and a run's keep_runs, with real runs."""

from datetime import datetime, timedelta

import duckdb
import pytest

from flows.reclassify import reclassify_catalog
from tasks import store
from tasks.folders import report_path
from tasks.run_retention import RUN_TABLES, plan_run_removal
from test_cli import env, pairwise  # noqa: F401 (env is a fixture)
from test_model_retention import copy, four_runs, params, rows  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("prefect_harness")
TABLES = (*RUN_TABLES, "run_attempts", "runs")


def run_rows(db):
    """Each table's rows per run id."""
    return {table: dict(rows(db, f"SELECT run_id, count(*) FROM {table} GROUP BY run_id")) for table in TABLES}


def readers_see(db):
    return [rows(db, f"SELECT * FROM {view} ORDER BY ALL") for view in ("catalog_labels", "current_labels")]


def test_keep_removes_old_runs_whole_but_those_still_read(copy, env):  # noqa: F811
    """Runs a, b, c (full, models a, b, c), then a night with model a: c labels the old items, the night the new
    ones, and each full run fitted a stored model, so none goes; once model b is removed, run b goes whole."""
    db, ids = copy
    before, seen = run_rows(db), readers_see(db)
    assert all(before[table].get("b") for table in ("item_labels", "joint_labels", "runs", "run_attempts"))
    assert report_path(db, "b").is_file()
    n_live = rows(db, "SELECT count(*) FROM catalog_labels WHERE run_id = 'c'")[0][0]
    result = pairwise(env, "runs", "--db", str(db), "--keep", "1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"Kept c: it still labels {n_live:,} live items",
                                          f"Kept b: it fitted stored model {ids['b']}",
                                          f"Kept a: it fitted stored model {ids['a']}",
                                          "Nothing to remove; 4 runs left"]
    assert pairwise(env, "models", "--db", str(db), "--remove", ids["b"]).returncode == 0
    dry = pairwise(env, "runs", "--db", str(db), "--keep", "1", "--dry-run")
    assert dry.stdout.startswith("Would remove b  succeeded  started ")
    assert dry.stdout.endswith("Would remove 1 run; 3 runs would be left\n") and run_rows(db) == before
    removed = pairwise(env, "runs", "--db", str(db), "--keep", "1")
    assert removed.returncode == 0 and removed.stdout.startswith("Removed b  succeeded  started "), removed.stderr
    after = run_rows(db)
    assert after == {table: {run: n for run, n in counts.items() if run != "b"} for table, counts in before.items()}
    assert not report_path(db, "b").exists() and report_path(db, "a").is_file()
    assert readers_see(db) == seen
    listed = pairwise(env, "runs", "--db", str(db))
    assert [line.split()[:2] for line in listed.stdout.splitlines()] == [["night", "succeeded"], ["c", "succeeded"],
                                                                        ["a", "succeeded"]]
    with duckdb.connect(str(db)) as con:  # one item: the listing said "1 items"
        con.execute("UPDATE runs SET n_items = 1 WHERE run_id = 'a'")
    assert "  1 item  model " in pairwise(env, "runs", "--db", str(db)).stdout


def test_a_run_with_keep_runs_removes_every_older_run_nothing_reads(copy, four_runs):  # noqa: F811
    """A full run relabels every item, but refit stability leaves an unchanged item the label a confident enough
    older model gave it: the run that gave it stays, with its model; every other older run goes."""
    db, _ = copy
    _, _, items_glob, classes_path = four_runs
    reclassify_catalog(params(items_glob, classes_path, db, run_id="d", keep_models=1, keep_runs=1))
    still_read = {run_id for (run_id,) in rows(db, "SELECT DISTINCT run_id FROM catalog_labels")}
    assert "d" in still_read and still_read <= {"a", "b", "c", "night", "d"}
    remaining = run_rows(db)
    assert all(set(counts) <= still_read for counts in remaining.values()), remaining
    assert set(remaining["runs"]) == set(remaining["item_labels"]) == set(remaining["run_attempts"]) == still_read
    assert {path.stem for path in report_path(db, "d").parent.iterdir()} == still_read
    assert rows(db, "SELECT count(*) FROM catalog_labels") == [(1200,)]


def test_runs_refuses_bad_asks_and_a_held_lock(copy, env):  # noqa: F811
    db, _ = copy
    before = run_rows(db)
    with store.run_lock(db):
        locked = pairwise(env, "runs", "--db", str(db), "--keep", "1")
    assert locked.returncode == 1 and locked.stderr.startswith(f"pairwise: another run is writing {db}")
    bad = pairwise(env, "runs", "--db", str(db), "--keep", "0")
    assert bad.returncode == 2 and "--keep: must be at least 1 (the latest always stays), got 0" in bad.stderr
    alone = pairwise(env, "runs", "--db", str(db), "--dry-run")
    assert (alone.returncode, alone.stderr) == (2, "pairwise: --dry-run goes with --keep: alone, `pairwise runs` "
                                                   "only lists\n")
    assert run_rows(db) == before


def _run(run_id, status, hours, n_live=0, fitted=None):
    return {"run_id": run_id, "status": status, "started_at": datetime(2026, 12, 1) + timedelta(hours=hours),
            "n_live": n_live, "fitted": fitted}


def test_the_plan_keeps_recent_history_and_what_is_still_read():
    newest_first = [_run("f2", "failed", 9), _run("s3", "succeeded", 8), _run("f1", "failed", 7),
                    _run("s2", "succeeded", 6), _run("r", "running", 5), _run("s1", "succeeded", 4, n_live=3),
                    _run("f0", "failed", 3), _run("s0", "succeeded", 2, fitted="m"), _run("old", "succeeded", 1)]
    plan = plan_run_removal(newest_first, keep=2)
    assert [row["run_id"] for row in plan.removed] == ["f0", "old"]
    assert [(row["run_id"], why.split(" (")[0]) for row, why in plan.stayed] == [
        ("r", "it is still marked running"), ("s1", "it still labels 3 live items"), ("s0", "it fitted stored model m")]
    assert plan.left == 7
    assert [row["run_id"] for row in plan_run_removal(newest_first, keep=4).removed] == ["old"]
    assert plan_run_removal(newest_first, keep=5).removed == []  # no more succeeded runs than asked to keep
    with pytest.raises(ValueError, match="--keep must be at least 1"):
        plan_run_removal(newest_first, keep=0)
