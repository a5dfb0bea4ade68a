"""Schema versions: files written before versions were recorded, fresh files, newer files, a failing migration."""

import json
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from tasks import store
from tasks.sql import MIGRATIONS, Migration

LATEST = len(MIGRATIONS)

# "v0": the DDL of the code before schema versions, as it was (sql/create_*.sql then), views included
V0_TABLES = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      VARCHAR PRIMARY KEY,
    status      VARCHAR NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ,
    params      JSON NOT NULL,
    n_items     BIGINT,
    n_classes   INTEGER,
    modalities  VARCHAR[],
    details     JSON,
    error       VARCHAR
);
CREATE TABLE IF NOT EXISTS item_labels (
    run_id          VARCHAR NOT NULL,
    item_id         VARCHAR NOT NULL,
    modality        VARCHAR NOT NULL,
    base_class      VARCHAR NOT NULL,
    base_score      REAL NOT NULL,
    base_margin     REAL,
    pairwise_class  VARCHAR NOT NULL,
    pairwise_margin REAL,
    gold_class      VARCHAR,
    given_gap       REAL,
    given_h2h       REAL
);
CREATE TABLE IF NOT EXISTS pair_masks (
    run_id VARCHAR NOT NULL, modality VARCHAR NOT NULL, class_a VARCHAR NOT NULL, class_b VARCHAR NOT NULL,
    n_dims INTEGER NOT NULL, dims INTEGER[] NOT NULL, n_a BIGINT NOT NULL, n_b BIGINT NOT NULL,
    fallback BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS agreement_metrics (
    run_id VARCHAR NOT NULL, method VARCHAR NOT NULL CHECK (method IN ('base', 'pairwise')),
    metric VARCHAR NOT NULL, modality_a VARCHAR NOT NULL, modality_b VARCHAR NOT NULL, value DOUBLE
);
CREATE TABLE IF NOT EXISTS rejected_items (
    run_id VARCHAR NOT NULL, item_id VARCHAR, modality VARCHAR, reason VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS annotation_issues (
    run_id VARCHAR NOT NULL, rank INTEGER NOT NULL, item_id VARCHAR NOT NULL, given_label VARCHAR NOT NULL,
    suggested_label VARCHAR NOT NULL, score DOUBLE NOT NULL, raw_score DOUBLE NOT NULL,
    agreeing_modalities INTEGER NOT NULL,
    evidence STRUCT(
        modality VARCHAR, base_label VARCHAR, base_margin REAL,
        pairwise_label VARCHAR, pairwise_margin REAL, given_gap REAL, given_h2h REAL
    )[] NOT NULL
);
CREATE TABLE IF NOT EXISTS confusion_counts (
    run_id VARCHAR NOT NULL, method VARCHAR NOT NULL, modality_a VARCHAR NOT NULL, modality_b VARCHAR NOT NULL,
    pred VARCHAR NOT NULL, ref VARCHAR NOT NULL, n BIGINT NOT NULL
);
"""
V0_VIEWS = """
CREATE OR REPLACE VIEW current_labels AS
SELECT l.*
FROM item_labels AS l
WHERE l.run_id = (
    SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
);
CREATE OR REPLACE VIEW consensus_labels AS
WITH votes AS (
    SELECT run_id, item_id, pairwise_class AS label, count(*) AS votes,
           max(pairwise_margin) AS top_margin, min(pairwise_margin) AS low_margin
    FROM item_labels
    GROUP BY run_id, item_id, pairwise_class
),
ranked AS (
    SELECT *,
           row_number() OVER by_strength AS place,
           count(*) OVER item AS n_labels,
           sum(votes) OVER item AS n_modalities,
           lead(votes) OVER by_strength AS next_votes,
           lead(top_margin) OVER by_strength AS next_margin
    FROM votes
    WINDOW item AS (PARTITION BY run_id, item_id),
           by_strength AS (PARTITION BY run_id, item_id ORDER BY votes DESC, top_margin DESC NULLS LAST, label)
),
decided AS (
    SELECT *,
           CASE
               WHEN n_labels = 1 AND n_modalities > 1 THEN 'agreed'
               WHEN n_labels = 1 THEN 'single_modality'
               WHEN votes > next_votes THEN 'majority'
               WHEN top_margin > next_margin THEN 'by_margin'
               ELSE 'undecided'
           END AS status
    FROM ranked
    WHERE place = 1
)
SELECT run_id, item_id,
       CASE WHEN status = 'undecided' THEN NULL ELSE label END AS label,
       CASE status
           WHEN 'by_margin' THEN top_margin - next_margin
           WHEN 'undecided' THEN NULL
           ELSE low_margin
       END AS confidence,
       CAST(votes AS INTEGER) AS agreeing_modalities,
       status
FROM decided;
"""
REVIEW_COLUMNS = ",\n    given_gap       REAL,\n    given_h2h       REAL"  # the oldest files lack them
# run "old" succeeded; run "withdrawn" is what a failed re-run of a succeeded id left: status failed, rows kept
LABELS = [("old", "a", "image", "hat", "hat"), ("old", "a", "text", "hat", "hat"),
          ("old", "b", "image", "bag", "bag"), ("old", "b", "text", "hat", "bag"),
          ("withdrawn", "a", "image", "bag", "bag"), ("withdrawn", "a", "text", "bag", "bag")]


def dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def write_v0(path: Path, *, review_columns: bool = True) -> Path:
    """A file as the code before schema versions left it (no version record), holding runs with rows."""
    tables = V0_TABLES if review_columns else V0_TABLES.replace(REVIEW_COLUMNS, "")
    owner = json.dumps({"owner": {"host": socket.gethostname(), "pid": dead_pid()}})
    with duckdb.connect(str(path)) as con:
        con.execute(tables + V0_VIEWS)
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


@pytest.mark.parametrize("review_columns", [True, False], ids=["v0", "v0-before-review-columns"])
def test_a_file_written_before_versions_is_upgraded_and_its_runs_stay_readable(tmp_path, review_columns):
    db = write_v0(tmp_path / "old.duckdb", review_columns=review_columns)
    with store.connect(db) as con:
        assert store.schema_version(con) == LATEST
        columns = [name for name, *_ in con.execute("DESCRIBE item_labels").fetchall()]
        current = con.execute("SELECT item_id, modality, pairwise_class, given_gap, given_h2h FROM current_labels "
                              "ORDER BY ALL").fetchall()
        consensus = con.execute("SELECT run_id, item_id, label, status FROM consensus_labels ORDER BY ALL").fetchall()
        confidences = con.execute("SELECT DISTINCT confidence FROM consensus_labels").fetchall()
        attempts = con.execute("SELECT run_id, attempt, status, host FROM run_attempts ORDER BY ALL").fetchall()
    applied = versions(db)
    assert [(version, name) for version, name, _ in applied] == [(m.version, m.name) for m in MIGRATIONS]
    assert columns[-4:] == ["given_gap", "given_h2h", "refined_class", "refined_confidence"]
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


def test_an_old_file_read_by_a_report_is_upgraded_first(tmp_path):
    db = write_v0(tmp_path / "old.duckdb")
    assert store.query(db, "report_run", {"run_id": "old"}).column("n_items").to_pylist() == [2]
    assert [version for version, *_ in versions(db)] == list(range(1, LATEST + 1))


def test_a_run_an_old_file_shows_running_is_marked_failed_once_its_process_is_gone(tmp_path):
    db = write_v0(tmp_path / "old.duckdb")
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
                      "rejected_items", "annotation_issues", "confusion_counts", "joint_labels", "calibration_bins"}
    assert views == {"current_labels", "consensus_labels"}


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
