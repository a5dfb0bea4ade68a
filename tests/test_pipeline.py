"""The reclassify-catalog flow end to end, under a real (temporary) Prefect server."""

import hashlib
import json
import os
import shutil
import subprocess
from contextlib import contextmanager

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import write_catalog
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import PairwiseClassifier, accuracy, agreement_f1, embeddings, make_catalog

pytestmark = pytest.mark.usefixtures("prefect_harness")

N_ITEMS, N_CLASSES = 1500, 5


@pytest.fixture(scope="module")
def catalog():
    return make_catalog(N_ITEMS, N_CLASSES, seed=4, label_noise=0.05)


def rows(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def labels_of(db, run_id, modality):
    got = rows(db, "SELECT item_id, base_class, pairwise_class FROM item_labels WHERE run_id = ? AND modality = ? "
                   "ORDER BY item_id", [run_id, modality])
    return {item: (base, pw) for item, base, pw in got}


def run(tmp_path, items, classes, gold_column="label", **extra):
    params = ReclassifyParams(items=items, classes=classes, db=str(tmp_path / "out.duckdb"), gold_column=gold_column,
                              chunk_size=400, **extra)
    return reclassify_catalog(params), tmp_path / "out.duckdb"


def test_parquet_run_writes_every_table_and_matches_the_core(tmp_path, catalog):
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=3, row_group_size=200)
    summary, db = run(tmp_path, items_glob, classes_path, seed=3)
    run_id = summary["run_id"]
    assert summary["details"]["n_partitions"] == 6
    # what it computed on, kept with the run: another BLAS kernel may round a near tie the other way
    environment = json.loads(rows(db, "SELECT details FROM runs")[0][0])["environment"]
    assert environment["packages"]["numpy"] == np.__version__
    assert environment["blas"] and all(blas["kernel"] for blas in environment["blas"] if blas["api"] == "openblas")
    assert rows(db, "SELECT status, n_items, n_classes, modalities FROM runs") == [
        ("succeeded", N_ITEMS, N_CLASSES, ["image", "text"])]
    assert rows(db, "SELECT count(*), count(DISTINCT item_id) FROM item_labels")[0] == (2 * N_ITEMS, N_ITEMS)
    assert rows(db, "SELECT count(*) FROM pair_masks")[0][0] == 2 * N_CLASSES * (N_CLASSES - 1) // 2
    assert rows(db, "SELECT count(*) FROM current_labels")[0][0] == 2 * N_ITEMS
    assert not (tmp_path / "out.duckdb.staging").exists()

    # partitioned pass 1 + pass 2 give exactly the labels of the core on the whole catalog
    names = classes.column("class_name").to_pylist()
    ids = items.column("item_id").to_pylist()
    gold = np.array([names.index(v) for v in items.column("label").to_pylist()])
    core = {}
    for modality in ("image", "text"):
        x = embeddings(items, f"{modality}_embedding")
        clf = PairwiseClassifier(embeddings(classes, f"{modality}_embedding"), seed=3).fit(x)
        core[modality] = clf.classify(x)
        written = labels_of(db, run_id, modality)
        assert [written[i][1] for i in ids] == [names[k] for k in core[modality].label]
        assert [written[i][0] for i in ids] == [names[k] for k in core[modality].base_label]
        dims = rows(db, "SELECT dims FROM pair_masks WHERE modality = ? AND class_a = ? AND class_b = ?",
                    [modality, names[0], names[1]])[0][0]
        assert dims == list(np.flatnonzero(clf.masks_[0, 1]))

    metrics = {(m, metric, a, b): v for m, metric, a, b, v in rows(
        db, "SELECT method, metric, modality_a, modality_b, value FROM agreement_metrics")}
    assert metrics[("pairwise", "agreement_f1_weighted", "image", "text")] == pytest.approx(
        agreement_f1(core["image"].label, core["text"].label))
    assert metrics[("base", "gold_accuracy", "text", "gold")] == pytest.approx(accuracy(gold, core["text"].base_label))
    assert metrics[("pairwise", "gold_accuracy", "image", "gold")] > metrics[("base", "gold_accuracy", "image", "gold")]


def parquet_run_and_a_table(tmp_path, items, classes, table: str, rows_in_table: pa.Table):
    """A run of the catalog as two Parquet files (in tmp_path/a), and a DuckDB file (tmp_path/b) holding
    ``rows_in_table`` as ``table`` and the classes as table ``classes``."""
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    from_parquet, db_parquet = run(tmp_path / "a", items_glob, classes_path)
    db = tmp_path / "b" / "out.duckdb"
    db.parent.mkdir()
    with duckdb.connect(str(db)) as con:
        con.register("i", rows_in_table)
        con.register("c", classes)
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM i")
        con.execute("CREATE TABLE classes AS SELECT * FROM c")
    return from_parquet, db_parquet, db, classes_path


def test_duckdb_table_source_gives_the_same_labels_as_parquet(tmp_path, catalog):
    items, classes = catalog
    from_parquet, db_parquet, db, _ = parquet_run_and_a_table(tmp_path, items, classes, "catalog", items)
    from_table, _ = run(tmp_path / "b", "table:catalog", "table:classes")
    for modality in ("image", "text"):
        assert labels_of(db, from_table["run_id"], modality) == labels_of(db_parquet, from_parquet["run_id"], modality)


def test_a_table_source_written_to_after_validation_fails_the_run_before_its_commit(tmp_path, catalog):
    """An upstream job inserting rows into a table source between validation (which checks that item_id is
    unique) and staging (which copies the table): the run labelled and committed duplicate ids, exit 0
    (helper 60's finding 11). The staged copy is checked against what validation saw."""
    from tasks.runs import stage_sources
    from tasks.sources import SourceError, inspect_sources
    from tasks.staging import Staging, prepare_staging

    items, classes = catalog
    _, _, db, _ = parquet_run_and_a_table(tmp_path, items, classes, "catalog", items)
    prepare_staging(str(db))
    plan = inspect_sources("table:catalog", "table:classes", db=str(db), gold_column=None, chunk_size=500)

    def stage(run_id: str):
        return stage_sources.fn(plan, "table:catalog", "table:classes", str(db), Staging.create(str(db), run_id), 500)

    staged, _ = stage("same")  # unchanged: staged and planned as before
    assert sum(p.n_rows for p in staged.partitions) == len(items)
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO catalog SELECT * FROM catalog LIMIT 100")
    with pytest.raises(SourceError, match=rf"^table:catalog: changed while the run read it \({len(items):,} rows when "
                                          rf"validated, {len(items) + 100:,} when staged\); nothing was committed"):
        stage("added")
    with duckdb.connect(str(db)) as con:  # as many rows as validated, one of them another's id
        con.execute("CREATE TABLE kept AS SELECT DISTINCT ON (item_id) * FROM catalog ORDER BY item_id")
        con.execute("DELETE FROM catalog")
        con.execute(f"INSERT INTO catalog SELECT * FROM kept LIMIT {len(items) - 1}")
        con.execute("INSERT INTO catalog SELECT * FROM kept LIMIT 1")
    with pytest.raises(SourceError, match=r"^table:catalog: item_id must be unique; ids that repeat"):
        stage("replaced")


def outcome(db, run_id):
    """What a run found, to compare runs of the same catalog: its labels, metrics and annotation issues, and
    apart the probabilities among them (other batch sizes round the BLAS products otherwise, to about 1e-7)."""
    metrics = rows(db, "SELECT method, metric, modality_a, modality_b, value FROM agreement_metrics WHERE run_id = ? "
                       "ORDER BY ALL", [run_id])
    issues = rows(db, "SELECT item_id, given_label, suggested_label, p_given FROM annotation_issues WHERE run_id = ? "
                      "ORDER BY item_id", [run_id])
    joint = rows(db, "SELECT item_id, label, status, confidence FROM consensus_labels WHERE run_id = ? "
                     "ORDER BY item_id", [run_id])
    found = {"labels": {m: labels_of(db, run_id, m) for m in ("image", "text")},
             **{name: [row[:-1] for row in got] for name, got in [("metrics", metrics), ("issues", issues),
                                                                  ("joint", joint)]}}
    return found, np.array([row[-1] for got in (metrics, issues, joint) for row in got])


def test_a_view_in_a_schema_with_a_dotted_gold_column_runs_and_nights_as_a_parquet_catalog(tmp_path, catalog):
    """table:staging.items, a view, and --gold-column gold.label crashed reading item_id and the gold values
    (a traceback, exit 1): now the run gives the Parquet catalog's labels, metrics and review, and a night over
    the view reads its ids."""
    items, classes = catalog
    dotted = items.rename_columns(["item_id", "image_embedding", "text_embedding", "gold.label"])
    from_parquet, db_parquet, db, classes_path = parquet_run_and_a_table(tmp_path, items, classes, "raw", dotted)
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA staging; CREATE VIEW staging.items AS SELECT * FROM raw")
    from_view, _ = run(tmp_path / "b", "table:staging.items", classes_path, gold_column="gold.label")
    (found, values), (expected, expected_values) = outcome(db, from_view["run_id"]), outcome(db_parquet,
                                                                                           from_parquet["run_id"])
    assert found == expected and ("refined", "gold_accuracy", "joint", "gold") in found["metrics"]
    assert found["issues"]  # the review read the dotted column
    np.testing.assert_allclose(values, expected_values, rtol=0, atol=1e-6)
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM raw WHERE item_id < 'item-0000100'")
    night = reclassify_catalog(ReclassifyParams(items="table:staging.items", classes=classes_path, db=str(db),
                                                gold_column="gold.label", chunk_size=400, model="latest",
                                                incremental=True))
    assert night["details"]["night"] | {"partitions_read": None} == {
        "source": N_ITEMS - 100, "new": 0, "changed": 0, "deleted": 100, "unversioned": 0, "labelled": 0,
        "carried_over": N_ITEMS - 100, "partitions_read": None}


def test_rerun_with_same_id_replaces_and_current_labels_follows_latest(tmp_path, catalog, caplog):
    import logging

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    run(tmp_path, items_glob, classes_path, run_id="nightly-1")
    logger = logging.getLogger("prefect.task_runs")
    logger.addHandler(caplog.handler)
    try:
        run(tmp_path, items_glob, classes_path, run_id="nightly-1", strategy="round_robin")
    finally:
        logger.removeHandler(caplog.handler)
    # a system that synced the first attempt's label_changes must hear that they are replaced
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("Run nightly-1 had succeeded: this attempt replaces its rows") for w in warnings), warnings
    db = tmp_path / "out.duckdb"
    assert rows(db, "SELECT count(*) FROM runs")[0][0] == 1
    assert rows(db, "SELECT count(*) FROM item_labels")[0][0] == 2 * N_ITEMS
    assert rows(db, "SELECT count(*) FROM pair_masks")[0][0] == 2 * N_CLASSES * (N_CLASSES - 1) // 2
    assert rows(db, "SELECT params->>'strategy' FROM runs")[0][0] == "round_robin"
    assert rows(db, "SELECT attempt, status FROM run_attempts ORDER BY attempt") == [(1, "succeeded"), (2, "succeeded")]
    run(tmp_path, items_glob, classes_path, run_id="nightly-2", seed=9)
    assert {r[0] for r in rows(db, "SELECT DISTINCT run_id FROM current_labels")} == {"nightly-2"}


def test_bad_rows_are_rejected_per_modality_and_every_item_is_accounted_for(tmp_path, catalog):
    items, classes = catalog
    rows_ = items.to_pylist()
    rows_[3]["image_embedding"] = None
    rows_[10]["text_embedding"] = [float("nan")] * 384
    rows_[11]["image_embedding"] = [0.0] * 512
    rows_[-1]["text_embedding"] = [1.0] * 100
    rows_[12]["image_embedding"] = rows_[12]["text_embedding"] = None  # no label at all
    schema = pa.schema([items.schema.field("item_id"), ("image_embedding", pa.list_(pa.float32())),
                        ("text_embedding", pa.list_(pa.float32())), items.schema.field("label")])
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    pq.write_table(pa.Table.from_pylist(rows_, schema=schema), bad_dir / "items.parquet", row_group_size=400)
    pq.write_table(classes, bad_dir / "classes.parquet")
    summary, db = run(tmp_path, str(bad_dir / "items.parquet"), str(bad_dir / "classes.parquet"))
    assert summary["details"]["n_rejected"] == 6
    rejected = rows(db, "SELECT item_id, modality, reason FROM rejected_items ORDER BY item_id, modality")
    assert rejected == [
        ("item-0000003", "image", "null embedding"),
        ("item-0000010", "text", "NaN, Inf or null value in embedding"),
        ("item-0000011", "image", "all-zero embedding"),
        ("item-0000012", "image", "null embedding"),
        ("item-0000012", "text", "null embedding"),
        ("item-0001499", "text", "embedding has 100 values, expected 384"),
    ]
    assert rows(db, "SELECT status FROM catalog_labels WHERE item_id = 'item-0000012'") == [("rejected",)]
    # both reports say so: their statuses' shares count the labelled items only
    from tasks.html_report import build_report
    from tasks.report import render_report

    sentence = "6 (item, modality) rows had no usable embedding; 1 of their items got no label at all"
    report = render_report(db, summary["run_id"])
    assert sentence in report and "| image    | null embedding" in report
    assert "parent: the same for the classes' parents" not in report  # no parent level: no note of one
    assert sentence in build_report(db, summary["run_id"]).html
    # every (item, modality) is in exactly one of item_labels and rejected_items
    accounted = rows(db, "SELECT count(*), count(DISTINCT (item_id, modality)) FROM "
                         "(SELECT item_id, modality FROM item_labels UNION ALL "
                         " SELECT item_id, modality FROM rejected_items)")[0]
    assert accounted == (2 * N_ITEMS, 2 * N_ITEMS)


def corrupt_embedding_pages(path):
    """Zero 60 kB of the image embeddings' pages in the first row group: they no longer decode."""
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert chunk.path_in_schema.startswith("image_embedding.")
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset + 100
    data[start:start + 60_000] = bytes(60_000)
    path.write_bytes(bytes(data))


def test_a_failed_run_changes_nothing_readers_see(tmp_path, catalog):
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    good, db = run(tmp_path, items_glob, classes_path, run_id="good")
    before = rows(db, "SELECT * FROM current_labels ORDER BY item_id, modality")

    # corrupt embedding pages of the second file (its footer and its item_id and label pages, which validation
    # reads, stay intact): the run fails while streaming, after it started writing
    second = sorted((tmp_path / "in").glob("items-*.parquet"))[1]
    corrupt_embedding_pages(second)
    with pytest.raises(Exception):
        run(tmp_path, items_glob, classes_path, run_id="bad")
    assert rows(db, "SELECT run_id, status FROM runs ORDER BY run_id") == [("bad", "failed"), ("good", "succeeded")]
    assert rows(db, "SELECT error FROM runs WHERE run_id = 'bad'")[0][0]
    assert rows(db, "SELECT count(*) FROM item_labels WHERE run_id = 'bad'")[0][0] == 0
    assert rows(db, "SELECT * FROM current_labels ORDER BY item_id, modality") == before
    assert not (tmp_path / "out.duckdb.staging").exists()


def test_a_signal_just_after_the_registration_marks_the_run_failed(tmp_path, catalog, monkeypatch):
    """Ctrl-C in the instant after the registration's commit, before start-run returned the attempt's number to
    the flow: the run stayed 'running' (until a later run marked it abandoned) though the command said
    interrupted. (SIGTERM's TerminationSignal is not raised here: Prefect sends the signal on to the process.)"""
    from tasks import store

    register = store.start_run

    def registered_then_stopped(*args, **kwargs):
        register(*args, **kwargs)
        raise KeyboardInterrupt

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    _, db = run(tmp_path, items_glob, classes_path, run_id="good")
    before = rows(db, "SELECT * FROM current_labels ORDER BY item_id, modality")
    monkeypatch.setattr(store, "start_run", registered_then_stopped)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, items_glob, classes_path, run_id="stopped")
    assert rows(db, "SELECT run_id, status, error FROM runs ORDER BY run_id") == [
        ("good", "succeeded", None), ("stopped", "failed", "KeyboardInterrupt")]
    assert rows(db, "SELECT status, error FROM run_attempts WHERE run_id = 'stopped'") == [
        ("failed", "KeyboardInterrupt")]
    assert rows(db, "SELECT * FROM current_labels ORDER BY item_id, modality") == before
    assert not (tmp_path / "out.duckdb.staging").exists()


def test_a_failure_that_cannot_be_recorded_still_reaches_the_user_and_the_next_run_clears_it(
        tmp_path, catalog, caplog):
    import logging

    from flows.progress import listening
    from tasks import store

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    corrupt_embedding_pages(sorted((tmp_path / "in").glob("items-*.parquet"))[1])  # as above
    db = tmp_path / "out.duckdb"
    held = []

    class HoldTheFile:
        """Opens the file read-only once the run has registered: then this process opens no write connection."""

        def phase(self, name, items=None, partitions=None, *, selective=False):
            if name == "stage the sources":
                held.append(duckdb.connect(str(db), read_only=True))

        def advance(self, items, labelled=None):
            pass

    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(caplog.handler)
    try:
        with listening(HoldTheFile()), pytest.raises(Exception) as failure:
            run(tmp_path, items_glob, classes_path, run_id="unrecorded")
    finally:
        logger.removeHandler(caplog.handler)
        for con in held:
            con.close()
    assert held, "the run never reached its staging phase"
    # the run's own error (reading the corrupt file), not the failed recording's
    assert isinstance(failure.value, OSError) and not isinstance(failure.value, duckdb.Error), failure.value
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith(f"Could not record that run unrecorded failed in {db}: ") for w in warnings), warnings
    assert rows(db, "SELECT status FROM run_attempts WHERE run_id = 'unrecorded'") == [("running",)]
    with store.run_lock(db):  # the next run finds it abandoned
        assert store.start_run(db, "next", {}).stale == ["unrecorded"]


def test_a_reader_that_keeps_the_file_through_the_commit_fails_the_run_in_a_line_that_says_what_is_left(
        tmp_path, catalog, monkeypatch, caplog):
    """An analyst's session holds the file from the commit on: the commit waits LOCK_WAIT_S and fails
    (DatabaseBusy); recording the failure then waited as long again for the same reader and failed too, and the
    line said only that the commit had waited. The record now waits RECORD_WAIT_S, and the line says what is
    left: nothing committed, the run's row 'running' until the next run."""
    import logging
    from contextlib import ExitStack

    from conftest import reader_holding
    from flows.progress import listening
    from tasks import store

    monkeypatch.setattr(store, "LOCK_WAIT_S", 10.0)
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    db = tmp_path / "out.duckdb"
    held = ExitStack()

    class HoldTheFileFromTheCommit:
        def phase(self, name, items=None, partitions=None, *, selective=False):
            if name == "commit":
                held.enter_context(reader_holding(str(db), 120))

        def advance(self, items, labelled=None):
            pass

    logger = logging.getLogger("prefect.flow_runs")
    logger.addHandler(caplog.handler)
    try:
        with held, listening(HoldTheFileFromTheCommit()), pytest.raises(store.DatabaseBusy) as failure:
            run(tmp_path, items_glob, classes_path, run_id="held")
    finally:
        logger.removeHandler(caplog.handler)
    assert str(failure.value).endswith(
        "waited 10 s for it to close the file; nothing of run held was committed, and runs shows it running until "
        "the next run marks it abandoned"), failure.value
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith(f"Could not record that run held failed in {db}: DatabaseBusy: ")
               and w.endswith(f"waited {store.RECORD_WAIT_S:g} s for it to close the file (the next run marks it "
                              "abandoned)") for w in warnings), warnings
    assert rows(db, "SELECT status FROM runs WHERE run_id = 'held'") == [("running",)]
    assert not (tmp_path / "out.duckdb.staging").exists()


def test_a_failed_rerun_of_a_succeeded_run_id_changes_nothing_readers_see(tmp_path, catalog):
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    _, db = run(tmp_path, items_glob, classes_path, run_id="nightly")
    readers_see = {
        "runs": "SELECT * FROM runs",
        "current_labels": "SELECT * FROM current_labels ORDER BY item_id, modality",
        "consensus_labels": "SELECT * FROM consensus_labels ORDER BY run_id, item_id",
    }
    before = {name: rows(db, sql) for name, sql in readers_see.items()}

    corrupt_embedding_pages(sorted((tmp_path / "in").glob("items-*.parquet"))[1])  # as above
    with pytest.raises(Exception):
        run(tmp_path, items_glob, classes_path, run_id="nightly", seed=5)
    assert {name: rows(db, sql) for name, sql in readers_see.items()} == before
    attempts = rows(db, "SELECT attempt, status, error IS NOT NULL FROM run_attempts ORDER BY attempt")
    assert attempts == [(1, "succeeded", False), (2, "failed", True)]
    assert not (tmp_path / "out.duckdb.staging").exists()


def test_export_writes_the_run_as_parquet(tmp_path, catalog):
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    summary, _ = run(tmp_path, items_glob, classes_path, export_dir=str(tmp_path / "export"))
    exported = {p.stem: pq.read_table(p) for p in (tmp_path / "export").glob("*.parquet")}
    assert set(exported) == {"runs", "item_labels", "joint_labels", "pair_masks", "agreement_metrics",
                             "rejected_items", "annotation_issues", "confusion_counts", "calibration_bins",
                             "drift_metrics", "label_changes"}
    assert exported["item_labels"].num_rows == 2 * N_ITEMS
    assert exported["joint_labels"].num_rows == N_ITEMS
    assert set(exported["runs"].column("run_id").to_pylist()) == {summary["run_id"]}


def test_an_export_that_fails_leaves_the_last_export_whole(tmp_path, catalog):
    from tasks.store import ExportFailed

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    export = tmp_path / "export"
    first, _ = run(tmp_path, items_glob, classes_path, export_dir=str(export))
    (export / "joint_labels.parquet").unlink()
    (export / "joint_labels.parquet").mkdir()  # the second export fails on its third table
    with pytest.raises(ExportFailed):
        run(tmp_path, items_glob, classes_path, export_dir=str(export), run_id="second")
    # refused before any file was written: the first run's other tables as they were
    tables = [path for path in export.glob("*.parquet") if path.is_file()]
    assert len(tables) == 10
    for path in tables:
        assert set(pq.read_table(path).column("run_id").to_pylist()) <= {first["run_id"]}, path
    assert not [path for path in export.iterdir() if path.name.startswith(".")]  # no partial file left


def contents(folder):
    """Each file of ``folder`` by name, with a digest of its bytes."""
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()[:16] for path in folder.iterdir()}


def exported_runs(folder):
    return {path.name: set(pq.read_table(path).column("run_id").to_pylist()) for path in folder.glob("*.parquet")}


@contextmanager
def immutable(path):
    """``path`` made immutable (chattr +i): no rename can replace it or move it, a real failure among an export's
    renames. It needs root (the CI machine runs as root); elsewhere the test is skipped."""
    if os.geteuid() != 0 or not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)],
                                                                         capture_output=True).returncode:
        pytest.skip("chattr +i needs root and a filesystem that supports it")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_rename_that_fails_part_way_leaves_the_last_export_whole(tmp_path, catalog):
    """Finding 57-02: the files were renamed over the last export's one at a time, and one that failed among
    them left files of both exports, which a reader could not tell from a whole one."""
    from tasks.store import export_run

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    export = tmp_path / "export"
    first, db = run(tmp_path, items_glob, classes_path, export_dir=str(export))
    run(tmp_path, items_glob, classes_path, run_id="second")
    (export / "drift_metrics.parquet").unlink()  # a table the last export lacked (an older version's)
    (export / "notes.txt").write_text("the user's own")  # not a table of the export: left as it is
    before, runs_before = contents(export), exported_runs(export)  # of the last export, taken before
    assert runs_before["runs.parquet"] == {first["run_id"]}
    assert all(ids <= {first["run_id"]} for ids in runs_before.values())
    for failing in ("runs", "confusion_counts", "label_changes"):  # the first rename, a middle one, the last
        with immutable(export / f"{failing}.parquet"), pytest.raises(PermissionError):
            export_run(db, ["second"], export)
        # every file as it was, the table the last export lacked not added, no temporary file left
        assert contents(export) == before, failing
        assert exported_runs(export) == runs_before, failing

    export_run(db, ["second"], export)
    assert set(contents(export)) == {*before, "drift_metrics.parquet"}
    assert (export / "notes.txt").read_text() == "the user's own"
    runs_after = exported_runs(export)
    assert runs_after["runs.parquet"] == {"second"} and all(ids <= {"second"} for ids in runs_after.values())


def test_a_flow_run_with_an_export_dir_that_is_a_file_stops_before_anything_is_written(tmp_path):
    (tmp_path / "afile").write_text("")  # a deployment's parameters do not go through the CLI's check
    with pytest.raises(ValueError, match=f"--export-dir: {tmp_path / 'afile'} is not a directory"):
        run(tmp_path, "never-read.parquet", "never-read.parquet", export_dir=str(tmp_path / "afile" / "out"))
    assert not (tmp_path / "out.duckdb").exists()


def test_a_dask_cluster_gives_the_same_outputs_as_local_threads(tmp_path, catalog, monkeypatch):
    from distributed import LocalCluster

    from flows.params import DASK_ALLOWED

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2)
    # with the graph refinement: its points and posteriors come back from the workers by path
    local, db_local = run(tmp_path / "local", items_glob, classes_path, seed=5, graph_k=5)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        monkeypatch.setenv(DASK_ALLOWED, cluster.scheduler_address)
        on_dask, db_dask = run(tmp_path / "dask", items_glob, classes_path, seed=5, dask_address=cluster.scheduler_address,
                               graph_k=5)
    # labels, masks and metrics are identical; float32 scores may differ in the last bit
    # (BLAS and SIMD summation order depend on threads and buffer alignment)
    labels = ("SELECT item_id, modality, base_class, pairwise_class, refined_class, gold_class FROM item_labels "
              "ORDER BY ALL")
    assert rows(db_dask, labels) == rows(db_local, labels)
    joint = "SELECT item_id, label, status FROM joint_labels ORDER BY ALL"
    assert rows(db_dask, joint) == rows(db_local, joint)
    graph = json.loads(rows(db_dask, "SELECT details FROM runs")[0][0])["graph"]
    assert graph["k"] == 5 and graph["items"] == N_ITEMS
    scores = "SELECT base_score, base_margin, pairwise_margin FROM item_labels ORDER BY item_id, modality"
    np.testing.assert_allclose(np.array(rows(db_dask, scores)), np.array(rows(db_local, scores)), rtol=1e-5, atol=1e-6)
    masks = "SELECT * EXCLUDE (run_id) FROM pair_masks ORDER BY modality, class_a, class_b"
    assert rows(db_dask, masks) == rows(db_local, masks)
    metrics = "SELECT method, metric, modality_a, modality_b, value FROM agreement_metrics ORDER BY ALL"
    for got, want in zip(rows(db_dask, metrics), rows(db_local, metrics), strict=True):
        assert got[:4] == want[:4] and got[4] == pytest.approx(want[4], rel=1e-12)  # summation order
    assert rows(db_dask, "SELECT count(*) FROM item_labels")[0][0] == 2 * N_ITEMS


def test_fit_fraction_fits_on_a_seeded_share_and_labels_everything(tmp_path, catalog):
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=3, row_group_size=200)
    summary, db = run(tmp_path, items_glob, classes_path, fit_fraction=0.5, seed=2)
    assert rows(db, "SELECT count(*) FROM item_labels")[0][0] == 2 * N_ITEMS
    # the masks come from half of the 6 partitions: fewer confident items behind them than with all
    n_half = rows(db, "SELECT sum(n_a + n_b) FROM pair_masks")[0][0]
    _, db_all = run(tmp_path / "all", items_glob, classes_path, seed=2)
    n_all = rows(db_all, "SELECT sum(n_a + n_b) FROM pair_masks")[0][0]
    assert n_half < 0.7 * n_all
    metrics = dict(rows(db, "SELECT modality_a, value FROM agreement_metrics "
                            "WHERE method = 'pairwise' AND metric = 'gold_accuracy'"))
    assert min(metrics.values()) > 0.8


def test_duplicate_item_ids_stop_the_run_before_it_writes(tmp_path, catalog):
    from tasks.sources import SourceError

    items, classes = catalog
    doubled = pa.concat_tables([items, items.slice(7, 2)])  # the same two items again, in a later partition
    items_glob, classes_path = write_catalog(tmp_path / "in", doubled, classes, n_files=2)
    with pytest.raises(SourceError, match=r"item_id must be unique; ids that repeat: 2, "
                                          r"e\.g\. item-0000007 \(2x\), item-0000008 \(2x\)$"):
        run(tmp_path, items_glob, classes_path, run_id="dup")
    assert not (tmp_path / "out.duckdb").exists()


def test_a_briefly_locked_database_is_waited_for(tmp_path, catalog):
    import subprocess
    import sys
    import time

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = tmp_path / "out.duckdb"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('held', flush=True);"
         " time.sleep(4)", str(db)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"  # another process has the file open for writing
    started = time.monotonic()
    summary, _ = run(tmp_path, items_glob, classes_path, run_id="retried")
    holder.wait(timeout=30)
    assert time.monotonic() - started > 3
    assert rows(db, "SELECT status FROM runs WHERE run_id = 'retried'") == [("succeeded",)]
    # the registering task met the lock and waited for it (tasks/store.py, up to 60 s), where it used to fail
    # and take Prefect's retries (1 s, then 4 s), which a longer hold outlasted
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        attempts = [t.run_count for t in client.read_task_runs(
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="start-run")))]
    assert max(attempts) == 1


def test_the_flow_run_is_named_after_the_run_id_it_records(tmp_path, catalog):
    """Without a run id, it is decided once, as Prefect names the flow run: for a run called here, and for
    one created first on the API under a generated name and then run the way a deployment's worker runs it
    (the parameters as JSON, the flow run read back from the API)."""
    from prefect.client.orchestration import get_client
    from prefect.flow_engine import run_flow

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    params = ReclassifyParams(items=items_glob, classes=classes_path, db=str(tmp_path / "out.duckdb"), chunk_size=1000)
    called = reclassify_catalog(params, return_state=True).state_details.flow_run_id
    with get_client(sync_client=True) as client:
        created = client.create_flow_run(reclassify_catalog, parameters={"params": params.model_dump(mode="json")})
        run_flow(reclassify_catalog, flow_run=client.read_flow_run(created.id))
        names = [client.read_flow_run(flow_run).name for flow_run in (called, created.id)]
    recorded = rows(tmp_path / "out.duckdb", "SELECT run_id FROM runs ORDER BY started_at")
    assert names == [run_id for (run_id,) in recorded]
    assert created.name not in names and len(set(names)) == 2  # the generated name was replaced by a new run id


def test_a_one_modality_run_s_report_says_why_every_item_is_single_modality(tmp_path, catalog):
    import html

    from tasks.html_report import build_report
    from tasks.report import ONE_MODALITY, render_report

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes.drop(["text_embedding"]))
    summary, db = run(tmp_path, items_glob, classes_path)
    assert rows(db, "SELECT DISTINCT status FROM consensus_labels") == [("single_modality",)]
    assert rows(db, "SELECT count(*) FROM rejected_items") == [(0,)]
    text = render_report(db, summary["run_id"])
    assert f"- single_modality: {ONE_MODALITY}" in text and "rejected" not in text
    page = build_report(db, summary["run_id"]).html
    assert html.escape(ONE_MODALITY) in page and "rejected" not in page


def test_a_one_modality_run_without_gold_says_its_confidence_is_not_fitted(tmp_path, catalog):
    """Its reports said "Confidence fitted without labels", while with one modality and no gold column the weight
    is a fixed tempering chosen on other catalogs (docs/tables.md), under which a threshold may accept nothing."""
    import html

    from tasks.html_report import build_report
    from tasks.report import FIXED_CONFIDENCE, calibration_words, render_report

    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes.drop(["text_embedding"]))
    summary, db = run(tmp_path, items_glob, classes_path, gold_column=None)
    assert summary["details"]["calibration"] == "label-free"
    text = render_report(db, summary["run_id"])
    assert f"Confidence {FIXED_CONFIDENCE}." in text and "fitted without labels" not in text
    assert html.escape(f"The confidence was {FIXED_CONFIDENCE}.") in build_report(db, summary["run_id"]).html
    assert calibration_words("label-free", 2) == "fitted without labels"  # two modalities fit it on each other


@pytest.mark.parametrize(("n_labelled", "calibration", "why"), [
    (None, "label-free", "--calibration label-free"),
    (150, "auto", "too few labelled items in gold column label to fit it on")])
def test_a_one_modality_run_with_a_gold_column_says_why_its_confidence_is_not_fitted(tmp_path, catalog, n_labelled,
                                                                                   calibration, why):
    """With a gold column, too few labels (or --calibration label-free) and one modality, both reports said "with
    one modality and no gold column to fit it on", and the warning "Confidence fitted without labels": there was a
    gold column, and nothing was fitted."""
    import html

    from tasks.html_report import build_report
    from tasks.report import FIXED_CONFIDENCE, render_report
    from tasks.run_log import too_few_labels

    items, classes = catalog
    if n_labelled is not None:
        labels = items.column("label").to_pylist()
        items = items.set_column(items.schema.get_field_index("label"), "label",
                                 pa.array(labels[:n_labelled] + [None] * (len(labels) - n_labelled)))
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes.drop(["text_embedding"]))
    summary, db = run(tmp_path, items_glob, classes_path, calibration=calibration)
    assert summary["details"]["calibration"] == "label-free"
    said = FIXED_CONFIDENCE.replace("no gold column to fit it on", why)
    assert f"Confidence {said}." in render_report(db, summary["run_id"])
    assert html.escape(f"The confidence was {said}.") in build_report(db, summary["run_id"]).html
    assert too_few_labels("label", 1).startswith("Confidence not fitted: with one modality it is a fixed tempering")
    assert too_few_labels("label").startswith("Confidence fitted without labels: ")


def test_blank_gold_values_count_as_no_label(tmp_path, catalog):
    """An empty or whitespace gold value is an item without a label, as a null is: it was scored as a wrong
    label (joint accuracy 0.500 on a catalog whose other labels were all right)."""
    items, classes = catalog
    labels = items.column("label").to_pylist()
    metrics = []
    for name, blank in (("null", None), ("blank", " ")):
        given = [blank if i % 3 == 0 else label for i, label in enumerate(labels)]
        with_blanks = items.set_column(items.schema.get_field_index("label"), "label", pa.array(given, pa.string()))
        items_glob, classes_path = write_catalog(tmp_path / name, with_blanks, classes)
        _, db = run(tmp_path / name, items_glob, classes_path)
        metrics.append(rows(db, "SELECT method, metric, modality_a, value FROM agreement_metrics "
                                "WHERE modality_b = 'gold' ORDER BY ALL"))
        assert rows(db, "SELECT count(*) FROM joint_labels WHERE gold_class IS NULL") == [(len(labels[::3]),)]
        assert rows(db, "SELECT count(*) FROM annotation_issues WHERE given_label IS NULL OR trim(given_label) = ''") \
            == [(0,)]
    assert [row[:3] for row in metrics[0]] == [row[:3] for row in metrics[1]] and metrics[0]
    # the same counts; a weighted F1 may differ in its last bit (its terms summed in another order)
    np.testing.assert_allclose([row[3] for row in metrics[0]], [row[3] for row in metrics[1]], rtol=1e-12)


def test_a_source_file_replaced_while_the_run_reads_it_fails_the_run_before_its_commit(tmp_path):
    """An upstream job that moved items between files mid-run (each file replaced by a rename) made a full run
    read some rows twice and others never, commit exit 0 and mark the unread ones deleted (helper 60's 07)."""
    from flows.reclassify import check_unchanged
    from tasks.sources import SourceError, inspect_sources

    items, classes = make_catalog(400, 4, seed=3)
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=2)
    # the signatures validation took before it read the files: one replaced after validation and before the
    # first pass was labelled unvalidated (its duplicate ids committed, helper 60's 11)
    plan = inspect_sources(items_glob, classes_path, db=str(tmp_path / "out.duckdb"), gold_column=None,
                           chunk_size=100)
    files, before = plan.item_files, plan.signatures
    assert len(files) == 2 and before.column("path").to_pylist() == list(files)
    check_unchanged(before, files)  # nothing moved: no error
    check_unchanged(None, files)  # a DuckDB table source has no files
    table = pq.read_table(files[1])
    pq.write_table(table.slice(0, 100), f"{files[1]}.tmp")
    os.replace(f"{files[1]}.tmp", files[1])
    with pytest.raises(SourceError, match=f"^{files[1]}: changed while the run read it; nothing was committed"):
        check_unchanged(before, files)
