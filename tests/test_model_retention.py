"""Removing stored models: `pairwise models --remove/--keep` and a run's keep_models, with real runs."""

import shutil
import subprocess
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import flows.reclassify
from conftest import reader_holding, write_catalog
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import make_catalog
from tasks import model_retention, store
from tasks.folders import report_path
from tasks.model_retention import plan_removal, remove_stored_models
from tasks.sql import MIGRATIONS
from test_cli import AS_A_USER, PAIRWISE, env, pairwise  # noqa: F401 (env is a fixture)

pytestmark = pytest.mark.usefixtures("prefect_harness")


def rows(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def params(items, classes, db, **extra):
    return ReclassifyParams(items=items, classes=classes, db=str(db), gold_column="label", chunk_size=400, **extra)


@pytest.fixture(scope="module")
def four_runs(tmp_path_factory):
    """Three full runs (models a, b, c: c the latest), then a night that labels 200 new items with model a:
    a still labels live items, b labels none."""
    folder = tmp_path_factory.mktemp("retention")
    items, classes = make_catalog(1200, 4, seed=5, label_noise=0.05)
    items_glob, classes_path = write_catalog(folder / "in", items.slice(0, 1000), classes)
    db = folder / "out.duckdb"
    for run_id in ("a", "b", "c"):
        reclassify_catalog(params(items_glob, classes_path, db, run_id=run_id))
    ids = dict(rows(db, "SELECT run_id, model_id FROM models"))
    pq.write_table(items.slice(1000), folder / "in" / "items-new.parquet")
    reclassify_catalog(params(items_glob, classes_path, db, run_id="night", model=ids["a"], incremental=True))
    return db, ids, items_glob, classes_path


@pytest.fixture
def copy(four_runs, tmp_path):
    """The database, its model store and its reports, copied: each test removes from its own."""
    db, ids, *_ = four_runs
    target = tmp_path / "out.duckdb"
    shutil.copyfile(db, target)
    for beside in (".models", ".reports"):
        shutil.copytree(f"{db}{beside}", f"{target}{beside}")
    return target, ids


def stored(db):
    return {model_id for (model_id,) in rows(db, "SELECT model_id FROM models")}


def folders(db):
    return {path.name for path in (db.parent / f"{db.name}.models").iterdir()}


def live(db, model_id):
    return rows(db, "SELECT count(*) FROM catalog_labels WHERE model_id = ?", [model_id])[0][0]


def test_keep_removes_the_older_models_but_one_that_still_labels_live_items(copy, env):  # noqa: F811
    db, ids = copy
    n_live = live(db, ids["a"])
    assert n_live > 0 and live(db, ids["b"]) == 0
    dry = pairwise(env, "models", "--db", str(db), "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith(f"Would remove {ids['b']}  run b  fitted ")
    assert f"Kept {ids['a']}: it still labels {n_live:,} live items\n" in dry.stdout
    assert stored(db) == folders(db) == set(ids.values())  # a dry run changes nothing
    result = pairwise(env, "models", "--db", str(db), "--keep", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"Removed {ids['b']}  run b  fitted ") and lines[0].endswith(" MB")
    assert lines[1:] == [f"Kept {ids['a']}: it still labels {n_live:,} live items",
                         f"Freed {lines[-1].split()[1]} MB; 2 stored models left"]
    assert stored(db) == folders(db) == {ids["a"], ids["c"]}
    assert store.stored_model(db, "latest")[0]["model_id"] == ids["c"]  # still loads: every file checked
    again = pairwise(env, "models", "--db", str(db), "--keep", "1")
    assert again.stdout.endswith("Nothing to remove; 2 stored models left\n")


def test_remove_refuses_the_latest_a_live_model_and_unknown_ids_and_removes_nothing(copy, env):  # noqa: F811
    db, ids = copy
    for asked, says in (([ids["c"]], f"model {ids['c']} is the latest: `--model latest` labels with it, so it stays"),
                        ([ids["b"], ids["a"]], f"model {ids['a']} still labels {live(db, ids['a']):,} live items"),
                        (["nope", ids["b"]], f"no such stored model in {db}: nope")):
        refused = pairwise(env, "models", "--db", str(db), "--remove", *asked)
        assert refused.returncode == 2 and refused.stderr.startswith(f"pairwise: {says}"), refused.stderr
        assert "Traceback" not in refused.stderr
        assert stored(db) == folders(db) == set(ids.values())
    removed = pairwise(env, "models", "--db", str(db), "--remove", ids["b"])
    assert removed.returncode == 0 and removed.stdout.startswith(f"Removed {ids['b']}  run b"), removed.stderr
    assert stored(db) == folders(db) == {ids["a"], ids["c"]}
    # asked for afterwards (`pairwise run --model ...`), it is named as removed, not as never stored
    with pytest.raises(ValueError, match=rf"^model {ids['b']} is no longer stored \(removed; run b fitted it\)"):
        store.stored_model(db, ids["b"])
    with pytest.raises(ValueError, match="^model nope: no such stored model in"):
        store.stored_model(db, "nope")
    bad = pairwise(env, "models", "--db", str(db), "--keep", "0")
    assert bad.returncode == 2 and "--keep: must be at least 1" in bad.stderr
    alone = pairwise(env, "models", "--db", str(db), "--dry-run")
    assert alone.returncode == 2 and alone.stderr == ("pairwise: --dry-run goes with --remove or --keep: alone, "
                                                      "`pairwise models` only lists\n")


def test_no_model_goes_while_a_run_holds_the_file(copy, env):  # noqa: F811
    db, ids = copy
    with store.run_lock(db):
        locked = pairwise(env, "models", "--db", str(db), "--keep", "1")
    assert locked.returncode == 1 and locked.stderr.startswith(f"pairwise: another run is writing {db}")
    assert stored(db) == folders(db) == set(ids.values())


def test_a_folder_left_without_its_row_goes_with_the_next_removal(copy, env):  # noqa: F811
    """A removal that crashed after its commit (the row gone, the folder not yet) leaves what a failed commit
    leaves: a folder without a row, which the next removal (or run) deletes."""
    db, ids = copy
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM models WHERE model_id = ?", [ids["b"]])
    assert ids["b"] in folders(db)
    result = pairwise(env, "models", "--db", str(db), "--keep", "3")
    assert result.stdout == "Nothing to remove; 2 stored models left\n"
    assert stored(db) == folders(db) == {ids["a"], ids["c"]}


def test_a_run_with_keep_models_removes_the_older_ones_after_it_commits(copy, four_runs):
    db, ids = copy
    _, _, items_glob, classes_path = four_runs
    summary = reclassify_catalog(params(items_glob, classes_path, db, run_id="d", keep_models=2))
    [(new,)] = rows(db, "SELECT model_id FROM models WHERE run_id = 'd'")
    # the full run labelled every item with the new model: a labels none now, and c is the newest but one
    assert stored(db) == folders(db) == {new, ids["c"]}
    assert summary["run_id"] == "d" and rows(db, "SELECT status FROM runs WHERE run_id = 'd'") == [("succeeded",)]


def test_a_night_whose_model_was_removed_as_it_started_labels_nothing_with_it(copy, four_runs, tmp_path,
                                                                             monkeypatch):
    """A night checks its --model before it takes the run lock: a removal in between (it takes the lock)
    took the model, and the night labelled new items with it anyway: live items of a model without row or files."""
    db, ids = copy
    _, _, items_glob, classes_path = four_runs
    inputs = shutil.copytree(Path(items_glob).parent, tmp_path / "in")
    new = pq.read_table(inputs / "items-new.parquet").slice(0, 50)
    later = pa.array([f"later-{i}" for i in range(new.num_rows)])
    pq.write_table(new.set_column(new.schema.get_field_index("item_id"), "item_id", later),
                   inputs / "items-later.parquet")
    checked = flows.reclassify.check_stored_model

    def checked_then_removed(*args, **kwargs):
        using = checked(*args, **kwargs)
        assert [row["model_id"] for row in remove_stored_models(db, [ids["b"]]).removed] == [ids["b"]]
        return using

    monkeypatch.setattr(flows.reclassify, "check_stored_model", checked_then_removed)
    with pytest.raises(ValueError, match=f"model {ids['b']} was removed as this run started"):
        reclassify_catalog(params(str(inputs / "items-*.parquet"), str(inputs / "classes.parquet"), db,
                                  run_id="late", model=ids["b"], incremental=True))
    assert live(db, ids["b"]) == 0 and rows(db, "SELECT count(*) FROM runs WHERE run_id = 'late'") == [(0,)]


def test_a_keep_models_that_waits_out_a_reader_in_vain_leaves_the_run_standing(copy, four_runs, monkeypatch):
    """A reader that opened the file after the commit (a dashboard) made keep_models' removal wait, then fail
    with DatabaseBusy: the committed run exited 1, "run failed", without its report."""
    db, ids = copy
    _, _, items_glob, classes_path = four_runs
    monkeypatch.setattr(store, "LOCK_WAIT_S", 1.0)
    removing = model_retention.remove_under_lock

    def with_a_reader(*args, **kwargs):
        with reader_holding(str(db), 30):
            return removing(*args, **kwargs)

    monkeypatch.setattr(model_retention, "remove_under_lock", with_a_reader)
    summary = reclassify_catalog(params(items_glob, classes_path, db, run_id="e", keep_models=1))
    assert summary["run_id"] == "e" and rows(db, "SELECT status FROM runs WHERE run_id = 'e'") == [("succeeded",)]
    assert report_path(db, "e").is_file()
    assert set(ids.values()) <= stored(db) == folders(db)  # nothing removed: the next run tries again


def test_a_model_folder_that_is_a_link_or_a_row_that_names_no_folder_of_the_store_counts_nothing(copy, tmp_path):
    """The sizes walked a model's folder that was a link (its target, never removed, counted as freed), and a
    row edited to name ``../..``: the walk went through whatever that named, the whole file system, and died
    with a traceback on a file that went meanwhile."""
    db, ids = copy
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "kept.bin").write_bytes(b"x" * 100_000)
    shutil.rmtree(store.stored_model_folder(db, ids["b"]))
    store.stored_model_folder(db, ids["b"]).symlink_to(outside)
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE models SET model_id = '../../../../../..' WHERE model_id = ?", [ids["a"]])
        con.execute("DELETE FROM catalog_items WHERE model_id = ?", [ids["a"]])
    dry = remove_stored_models(db, keep=1, dry_run=True)
    assert dry.sizes == {ids["b"]: 0, "../../../../../..": 0}
    removed = remove_stored_models(db, keep=1)
    assert removed.sizes == dry.sizes and stored(db) == folders(db) == {ids["c"]}
    assert (outside / "kept.bin").stat().st_size == 100_000  # the link went, not what it named


def test_a_refused_removal_leaves_a_file_of_an_older_schema_as_it_was(tmp_path):
    """Bad input changes nothing: a --remove of an unknown id upgraded the file's schema in place (an older
    nightly worker then refuses it) and left a lock file, then said "nothing was removed"."""
    db = tmp_path / "old.duckdb"
    release = sorted(Path(__file__).with_name("schema_history").glob("*.sql"))[-1]
    with duckdb.connect(str(db)) as con:
        con.execute(release.read_text())
    before = rows(db, "SELECT max(version) FROM schema_migrations")
    assert before[0][0] < len(MIGRATIONS)
    with pytest.raises(ValueError, match="no such stored model"):
        remove_stored_models(db, ["nope"])
    assert rows(db, "SELECT max(version) FROM schema_migrations") == before
    assert not store.beside(db, ".lock").exists()


def test_plan_removal_keeps_the_newest_and_the_live():
    rows_ = [{"model_id": m, "n_live": n} for m, n in (("c", 5), ("b", 0), ("a", 3), ("z", 0))]
    removal = plan_removal(rows_, None, 1, "db")
    assert [r["model_id"] for r in removal.removed] == ["b", "z"]
    assert [r["model_id"] for r in removal.still_live] == ["a"]
    assert [r["model_id"] for r in removal.left] == ["c", "a"]
    assert plan_removal(rows_, None, 4, "db").removed == []
    assert [r["model_id"] for r in plan_removal(rows_, ["z", "b", "z"], None, "db").removed] == ["z", "b"]
    assert plan_removal([], None, 1, "db").removed == []
    with pytest.raises(ValueError, match="--keep must be at least 1"):
        plan_removal(rows_, None, 0, "db")


@pytest.mark.skipif(not AS_A_USER, reason="needs root's capabilities to drop (setpriv)")
def test_a_folder_that_cannot_be_deleted_is_named_not_counted_as_freed(copy, env):  # noqa: F811
    """rmtree, told to ignore errors, left the folder and the command said "Freed" (helper 69's F5)."""
    db, ids = copy
    locked = db.parent / f"{db.name}.models" / ids["b"] / "locked"
    locked.mkdir()
    (locked / "file").write_bytes(b"x" * 1000)
    locked.chmod(0o500)  # its owner, without root's override, cannot delete what it holds
    before = model_retention.folder_bytes(locked.parent)
    try:
        result = subprocess.run([*AS_A_USER, PAIRWISE, "models", "--db", str(db), "--remove", ids["b"]], env=env,
                                capture_output=True, text=True, timeout=300)
    finally:
        locked.chmod(0o700)
    folder = db.parent / f"{db.name}.models" / ids["b"]
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr == (f"pairwise: could not delete {folder} (its model's row is removed; the next removal or "
                             "run deletes it once it can)\n")
    # the files it could delete are freed, the 1,000 bytes left are not
    assert result.stdout.endswith(f"Freed {(before - 1000) / 1e6:,.1f} MB; 2 stored models left\n")
    assert model_retention.folder_bytes(folder) == 1000
    assert stored(db) == {ids["a"], ids["c"]} and folders(db) == set(ids.values())
    again = pairwise(env, "models", "--db", str(db), "--keep", "3")  # the next removal deletes it once it can
    assert again.returncode == 0 and folders(db) == {ids["a"], ids["c"]}
