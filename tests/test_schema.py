"""Schema versions: files written before versions were recorded, fresh files, newer files, a failing migration."""

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tasks import store
from tasks.sql import MIGRATIONS, OWN_NAMES, Migration

LATEST = len(MIGRATIONS)

# the statements every released schema ran on a fresh file, oldest first (written from git by generate.py)
RELEASES = sorted(Path(__file__).with_name("schema_history").glob("*.sql"))
BEFORE_VERSIONS = RELEASES[:5]  # the code before schema versions (sql/create_*.sql then), views included
# run "old" succeeded; run "withdrawn" is what a failed re-run of a succeeded id left: status failed, rows kept
LABELS = [("old", "a", "image", "hat", "hat"), ("old", "a", "text", "hat", "hat"),
          ("old", "b", "image", "bag", "bag"), ("old", "b", "text", "hat", "bag"),
          ("withdrawn", "a", "image", "bag", "bag"), ("withdrawn", "a", "text", "bag", "bag")]


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def write_v0(path: Path, release: Path = BEFORE_VERSIONS[-1]) -> Path:
    """A file as the code before schema versions left it (no version record), holding runs with rows."""
    owner = json.dumps({"owner": {"host": socket.gethostname(), "pid": dead_pid()}})
    with duckdb.connect(str(path)) as con:
        con.execute(release.read_text())
        con.execute("INSERT INTO runs VALUES "
                    "('old', 'succeeded', '2026-01-01 00:00:00+00', '2026-01-01 00:01:00+00', '{\"seed\": 0}', 2, 2, "
                    "['image', 'text'], '{}', NULL), "
                    "('withdrawn', 'failed', '2026-01-02 00:00:00+00', '2026-01-02 00:01:00+00', '{}', 1, 2, "
                    "['image', 'text'], '{}', 'OSError: boom'), "
                    "('crashed', 'running', '2026-01-03 00:00:00+00', NULL, '{}', NULL, NULL, NULL, ?, NULL)", [owner])
        columns = "run_id, item_id, modality, base_class, base_score, base_margin, pairwise_class, pairwise_margin"
        con.executemany(f"INSERT INTO item_labels ({columns}) VALUES (?, ?, ?, ?, 0.5, 0.1, ?, 0.2)", LABELS)
        con.execute("INSERT INTO agreement_metrics VALUES ('old', 'pairwise', 'agreement_f1_weighted', 'image', "
                    "'text', 0.75)")
    return path


def versions(db: Path) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()


@pytest.mark.parametrize("release", BEFORE_VERSIONS, ids=lambda path: path.stem)
def test_a_file_written_before_versions_is_upgraded_and_its_runs_stay_readable(tmp_path, release):
    db = write_v0(tmp_path / "old.duckdb", release)
    with store.connect(db) as con:
        assert store.schema_version(con) == LATEST
        columns = [name for name, *_ in con.execute("DESCRIBE item_labels").fetchall()]
        current = con.execute("SELECT item_id, modality, pairwise_class, given_gap, given_h2h FROM current_labels "
                              "ORDER BY ALL").fetchall()
        consensus = con.execute("SELECT run_id, item_id, label, status FROM consensus_labels ORDER BY ALL").fetchall()
        confidences = con.execute("SELECT DISTINCT confidence FROM consensus_labels").fetchall()
        attempts = con.execute("SELECT run_id, attempt, status, host FROM run_attempts ORDER BY ALL").fetchall()
        state = con.execute("SELECT item_id, label, status, run_id FROM catalog_labels ORDER BY ALL").fetchall()
        # runs before the parent level (schema version 7) have none; the metrics may now have one
        parents = con.execute("SELECT DISTINCT c.parent_label, c.parent_confidence, s.parent_label "
                              "FROM consensus_labels AS c JOIN catalog_labels AS s USING (item_id)").fetchall()
        con.execute("INSERT INTO agreement_metrics VALUES ('withdrawn', 'refined_parent', 'gold_accuracy', 'joint', "
                    "'gold', 0.5)")
    applied = versions(db)
    # the catalog's state starts as the latest succeeded run (schema version 6)
    assert state == [("a", "hat", "agreed", "old"), ("b", "bag", "agreed", "old")]
    assert parents == [(None, None, None)]
    assert [(version, name) for version, name, _ in applied] == [(m.version, m.name) for m in MIGRATIONS]
    assert columns[-6:] == ["given_gap", "given_h2h", "refined_class", "refined_confidence", "parent_class",
                            "parent_confidence"]
    assert current == [("a", "image", "hat", None, None), ("a", "text", "hat", None, None),
                       ("b", "image", "bag", None, None), ("b", "text", "bag", None, None)]
    # the rows a failed re-run left under its id no longer show: succeeded runs only
    assert consensus == [("old", "a", "hat", "agreed"), ("old", "b", "bag", "agreed")]
    assert confidences == [(None,)]  # runs before the joint label had no probability to give
    assert attempts == [("crashed", 1, "running", socket.gethostname()), ("old", 1, "succeeded", None),
                        ("withdrawn", 1, "failed", None)]
    assert store.query(db, "report_consensus_status", {"run_id": "old"}).column("n_items").to_pylist() == [2]
    assert store.query(db, "report_metrics", {"run_id": "old"}).column("pairwise").to_pylist() == [0.75]
    shares = store.query(db, "report_class_distribution", {"run_id": "old"}).to_pylist()
    assert {(r["modality"], r["class"], r["method"]): r["n_items"] for r in shares}[("text", "hat", "base")] == 2

    with store.connect(db):  # a second connection applies nothing
        pass
    assert versions(db) == applied


# one row per table, as SQL literals by column: a file of any release gets the columns its tables have
ROWS = {
    "runs": {"run_id": "'old'", "status": "'succeeded'", "started_at": "'2026-01-01 00:00:00+00'",
             "finished_at": "'2026-01-01 00:01:00+00'", "params": "'{\"seed\": 0}'", "n_items": "1",
             "n_classes": "2", "modalities": "['image', 'text']", "details": "'{}'", "error": "NULL"},
    "run_attempts": {"run_id": "'old'", "attempt": "1", "status": "'succeeded'",
                     "started_at": "'2026-01-01 00:00:00+00'", "finished_at": "'2026-01-01 00:01:00+00'",
                     "params": "'{}'", "host": "'worker'", "pid": "7", "error": "NULL"},
    "item_labels": {"run_id": "'old'", "item_id": "'a'", "modality": "'image'", "base_class": "'hat'",
                    "base_score": "0.5", "base_margin": "0.25", "pairwise_class": "'bag'", "pairwise_margin": "0.125",
                    "gold_class": "'hat'", "given_gap": "0.25", "given_h2h": "0.5", "refined_class": "'bag'",
                    "refined_confidence": "0.75"},
    "pair_masks": {"run_id": "'old'", "modality": "'image'", "class_a": "'bag'", "class_b": "'hat'", "n_dims": "2",
                   "dims": "[0, 3]", "n_a": "5", "n_b": "6", "fallback": "false"},
    "agreement_metrics": {"run_id": "'old'", "method": "'pairwise'", "metric": "'agreement_f1_weighted'",
                          "modality_a": "'image'", "modality_b": "'text'", "value": "0.75"},
    "rejected_items": {"run_id": "'old'", "item_id": "'b'", "modality": "'text'", "reason": "'nan'"},
    "annotation_issues": {
        "run_id": "'old'", "rank": "1", "item_id": "'a'", "given_label": "'hat'", "suggested_label": "'bag'",
        "score": "1.5", "raw_score": "1.25", "agreeing_modalities": "1",
        "evidence": "[{'modality': 'image', 'base_label': 'hat', 'base_margin': 0.25, 'pairwise_label': 'bag', "
                    "'pairwise_margin': 0.125, 'given_gap': 0.25, 'given_h2h': 0.5}]",
        "p_given": "0.125", "route": "'both'", "zero_shot_p_given": "0.25", "zero_shot_label": "'bag'",
        "label_aware_p_given": "0.0625", "label_aware_label": "'bag'"},
    "confusion_counts": {"run_id": "'old'", "method": "'pairwise'", "modality_a": "'image'", "modality_b": "'gold'",
                         "pred": "'bag'", "ref": "'hat'", "n": "1"},
    "joint_labels": {"run_id": "'old'", "item_id": "'a'", "label": "'bag'", "confidence": "0.75",
                     "status": "'single_modality'", "agreeing_modalities": "1", "n_modalities": "1",
                     "gold_class": "'hat'"},
    "calibration_bins": {"run_id": "'old'", "modality": "'joint'", "bin": "7", "n": "1", "confidence": "0.75",
                         "correct": "0"},
}


def schema(db: Path) -> dict[str, set[tuple]]:
    """Every column (views' included) with its type and nullability, and every constraint."""
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            "columns": set(con.execute("SELECT table_name, column_name, data_type, is_nullable "
                                       "FROM information_schema.columns WHERE table_schema = 'main'").fetchall()),
            "constraints": set(con.execute("SELECT table_name, constraint_type, constraint_text "
                                           "FROM duckdb_constraints()").fetchall()),
        }


def write_release(path: Path, release: Path) -> dict[str, list[tuple]]:
    """A file as the code of a release left it, with a row in each of its tables: those rows, by table."""
    kept = {}
    with duckdb.connect(str(path)) as con:
        con.execute(release.read_text())
        for table, row in ROWS.items():
            present = {name for (name,) in con.execute(
                "SELECT column_name FROM duckdb_columns() WHERE table_name = ?", [table]).fetchall()}
            if present:
                columns = ", ".join(name for name in row if name in present)
                con.execute(f"INSERT INTO {table} ({columns}) VALUES "
                            f"({', '.join(value for name, value in row.items() if name in present)})")
                kept[table] = (columns, con.execute(f"SELECT {columns} FROM {table}").fetchall())
    return kept


@pytest.mark.parametrize("release", RELEASES, ids=lambda path: path.stem)
def test_a_file_of_every_released_schema_opens_at_the_latest_version_with_its_rows(tmp_path, release):
    db = tmp_path / "old.duckdb"
    kept = write_release(db, release)
    with store.connect(db) as con:
        assert store.schema_version(con) == LATEST
        for table, (columns, rows) in kept.items():
            assert con.execute(f"SELECT {columns} FROM {table}").fetchall() == rows, table
        # runs from before the model store labelled with no stored model
        assert {model for (model,) in con.execute("SELECT model_id FROM runs").fetchall()} <= {None}
    with store.connect(tmp_path / "fresh.duckdb"):
        pass
    assert schema(db) == schema(tmp_path / "fresh.duckdb")
    issues = store.query(db, "report_annotation_issues", {"run_id": "old", "limit": 5}).to_pylist()
    assert [(row["item_id"], row["suggested_label"]) for row in issues] == ([("a", "bag")] if "annotation_issues"
                                                                            in kept else [])


def test_an_old_read_only_file_is_reported_on_as_it_is(tmp_path):
    folder = tmp_path / "snapshot"
    folder.mkdir()
    db = write_v0(folder / "old.duckdb")
    db.chmod(0o444)
    folder.chmod(0o555)  # tests may run as root, whom this does not stop: the file's bytes tell
    before = (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns, sorted(folder.iterdir()))
    holder = subprocess.Popen(  # DuckDB lets no process write while another reads, whoever it runs as
        [sys.executable, "-c", ("import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True); "
                                "print('held', flush=True); sys.stdin.read()"), str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.query(db, "report_run", {"run_id": "old"}).column("n_items").to_pylist() == [2]
        assert store.query(db, "report_consensus_status", {"run_id": "old"}).column("n_items").to_pylist() == [2]
        report = subprocess.run([str(Path(sys.executable).with_name("pairwise")), "report", "--db", str(db),
                                 "--run-id", "old"], capture_output=True, text=True, timeout=120)
    finally:
        holder.communicate("", timeout=30)
        folder.chmod(0o755)
    assert report.returncode == 0, report.stderr
    assert "# Run old: succeeded" in report.stdout
    assert "Not recorded: the run predates label_changes (schema version 6)." in report.stdout  # not "no change"
    assert (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns, sorted(folder.iterdir())) == before
    with duckdb.connect(str(db), read_only=True) as con:
        assert store.schema_version(con) == 0


def test_a_run_an_old_file_shows_running_is_marked_failed_once_its_process_is_gone(tmp_path):
    db = write_v0(tmp_path / "old.duckdb")
    with store.run_lock(db):
        assert store.start_run(db, "new", {}).stale == ["crashed"]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status FROM runs WHERE run_id = 'crashed'").fetchall() == [("failed",)]


def test_a_fresh_file_gets_every_migration(tmp_path):
    db = tmp_path / "new" / "out.duckdb"
    with store.connect(db) as con:
        tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        views = {name for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal")
                 .fetchall()}
    assert [version for version, *_ in versions(db)] == list(range(1, LATEST + 1))
    assert tables == {"schema_migrations", "runs", "run_attempts", "item_labels", "pair_masks", "agreement_metrics",
                      "rejected_items", "annotation_issues", "confusion_counts", "joint_labels", "calibration_bins",
                      "models", "catalog_items", "catalog_files", "label_changes", "drift_metrics"}
    assert views == {"current_labels", "consensus_labels", "catalog_labels"}


def storage_version(db: Path) -> str:
    with duckdb.connect(str(db), read_only=True) as con:
        (tags,) = con.execute("SELECT tags FROM duckdb_databases() WHERE path = ?", [str(db)]).fetchall()[0]
    return tags["storage_version"]


def test_a_new_file_is_in_duckdb_1_5s_storage_format_and_an_older_one_keeps_its_own(tmp_path):
    """Analysts with DuckDB 1.5 read our files (operations.md); DuckDB 2.0 would make new files 2.0-only."""
    db = tmp_path / "out.duckdb"
    with store.connect(db) as con:
        con.execute("SELECT 1").fetchall()
    assert storage_version(db) == "v1.5.0+"
    older = tmp_path / "older.duckdb"
    with duckdb.connect(str(older), config={"storage_compatibility_version": "v1.0.0"}) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS a")
    with store.connect(older) as con:  # migrated, written to
        con.execute("INSERT INTO t VALUES (2)")
    assert storage_version(older) == "v1.0.0+"


def test_a_file_of_a_newer_schema_version_is_refused_and_left_as_it_is(tmp_path):
    db = tmp_path / "newer.duckdb"
    with store.connect(db) as con:
        con.execute("INSERT INTO schema_migrations VALUES (?, 'from_the_future', now())", [LATEST + 1])
        con.execute("DROP VIEW consensus_labels")  # a connection that went on would re-create it
    before = db.read_bytes()
    message = rf"{db}: schema version {LATEST + 1} is newer than this code knows \({LATEST}\)"
    with pytest.raises(ValueError, match=message):
        with store.connect(db):
            pass
    with pytest.raises(ValueError, match=message):
        store.query(db, "report_latest_run")
    assert db.read_bytes() == before
    report = subprocess.run([str(Path(sys.executable).with_name("pairwise")), "report", "--db", str(db)],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 2 and report.stderr.count("\n") == 1 and "is newer than this code" in report.stderr


def test_a_migration_that_fails_is_rolled_back_and_not_recorded(tmp_path, monkeypatch):
    db = tmp_path / "out.duckdb"
    with store.connect(db):
        pass
    applied = versions(db)
    broken = Migration(LATEST + 1, "broken", "ALTER TABLE item_labels ADD COLUMN never_added VARCHAR;\n"
                                             "CREATE TABLE half_done (i INTEGER);\n"
                                             "SELECT * FROM no_such_table;")
    monkeypatch.setattr(store, "MIGRATIONS", (*MIGRATIONS, broken))
    with pytest.raises(RuntimeError, match=rf"upgrading to schema version {LATEST + 1} \(broken\) failed, the "
                                           rf"file is left at version {LATEST}: Catalog Error"):
        with store.connect(db):
            pass
    assert versions(db) == applied
    with duckdb.connect(str(db), read_only=True) as con:
        columns = [name for name, *_ in con.execute("DESCRIBE item_labels").fetchall()]
        tables = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert "never_added" not in columns and "half_done" not in tables


def test_own_names_are_every_table_and_view_of_a_migrated_file(tmp_path):
    # `pairwise classes --table` refuses them: a user table by one of these names would replace ours
    with store.connect(tmp_path / "x.duckdb") as con:
        names = {name for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' UNION ALL "
            "SELECT view_name FROM duckdb_views() WHERE schema_name = 'main' AND NOT internal").fetchall()}
    assert names == OWN_NAMES


def test_label_changes_keep_their_rows_when_version_10_adds_the_parent_labels_and_causes(tmp_path):
    db = tmp_path / "v9.duckdb"
    with duckdb.connect(str(db)) as con:  # a file as schema version 9 left it, with a run's changes
        for migration in MIGRATIONS[:9]:
            con.execute(migration.text)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [migration.version, migration.name])
        con.execute("INSERT INTO label_changes VALUES ('r1', 'a', 'relabelled', 'hat', 'bag', 0.5, 0.75, 'refit')")
    with store.connect(db) as con:
        assert store.schema_version(con) == LATEST
        assert con.execute("SELECT * FROM label_changes").fetchall() == [
            ("r1", "a", "relabelled", "hat", "bag", 0.5, 0.75, "refit", None, None)]
        con.execute("INSERT INTO label_changes BY NAME SELECT 'r2' AS run_id, 'b' AS item_id, "
                    "'relabelled' AS change, 'neighbours' AS cause")  # the new causes pass the table's check
        with pytest.raises(duckdb.ConstraintException):
            con.execute("INSERT INTO label_changes BY NAME SELECT 'r3' AS run_id, 'c' AS item_id, "
                        "'relabelled' AS change, 'graph' AS cause")
