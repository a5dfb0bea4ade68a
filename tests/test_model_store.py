"""The model store: a full run's fitted model as a row in `models` and its files in `<db>.models/<model_id>/`."""

import hashlib
import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prefect.logging import disable_run_logger

from conftest import write_catalog
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import Modality, embeddings, make_catalog
from pairwise_core.drift import SAMPLE_ROWS, js_distance
from tasks import store
from tasks.models import MANIFEST, ModelMismatch, class_hash, load_model, save_part, seal
from tasks.runs import check_stored_model, in_latest_order, start_run
from tasks.sources import inspect_sources
from tasks.staging import Staging
from test_cli import AS_A_USER, PAIRWISE, env, pairwise  # noqa: F401 (env is a fixture)
from test_model_arrays import fitted_parts

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A full run with given labels (so its model has all three parts)."""
    folder = tmp_path_factory.mktemp("store")
    items, classes = make_catalog(1200, 4, seed=2, label_noise=0.05)
    items_glob, classes_path = write_catalog(folder / "in", items, classes, n_files=2, row_group_size=300)
    db = folder / "out.duckdb"
    summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db),
                                                  gold_column="label", chunk_size=300, issues_below=1.0))
    return db, summary["run_id"], items, classes, items_glob, classes_path


def rows(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_full_run_stores_its_model_with_a_row_that_checks_it(stored):
    db, run_id, _, classes, *_ = stored
    [(model_id, n_items, params, modalities, dims, n_classes, hashed, version, content_hash, path)] = rows(
        db, "SELECT model_id, n_items, params, modalities, dims, n_classes, class_hash, schema_version, "
            "content_hash, path FROM models WHERE run_id = ?", [run_id])
    assert rows(db, "SELECT model_id FROM runs WHERE run_id = ?", [run_id]) == [(model_id,)]
    assert (n_items, modalities, json.loads(dims), n_classes, version) == (1200, ["image", "text"],
                                                                           {"image": 512, "text": 384}, 4, 2)
    assert json.loads(params)["review"] == "both" and json.loads(params)["core"]["seed"] == 0
    names = tuple(classes.column("class_name").to_pylist())
    assert hashed == class_hash(names, {m: embeddings(classes, f"{m}_embedding") for m in ("image", "text")})
    folder = db.parent / path
    assert folder == db.parent / "out.duckdb.models" / model_id
    assert mode(folder.parent) == mode(folder) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == [
        "classifiers.json", "classifiers.npz", "drift_reference.json", "drift_reference.npz", MANIFEST,
        "refinement.json", "refinement.npz", "review.json", "review.npz"]
    assert hashlib.sha256((folder / MANIFEST).read_bytes()).hexdigest() == content_hash
    assert not (db.parent / "out.duckdb.staging").exists()


def test_a_full_run_stores_a_drift_reference_drawn_from_its_items_with_their_class_shares(stored):
    db, run_id, items, *_ = stored
    reference = store.stored_model(db, "latest")[1].drift_reference
    assert list(reference.x) == ["image", "text"]
    for modality, x in reference.x.items():
        catalog = {row.tobytes() for row in embeddings(items, f"{modality}_embedding").astype(np.float32)}
        assert 0 < len(x) <= SAMPLE_ROWS and x.dtype == np.float32
        assert all(row.tobytes() in catalog for row in x)
    labels = dict(rows(db, "SELECT label, count(*) FROM joint_labels WHERE run_id = ? GROUP BY label", [run_id]))
    names = store.stored_model(db, "latest")[1].classifiers.class_names
    shares = np.array([labels.get(name, 0) for name in names]) / sum(labels.values())
    assert js_distance(np.bincount(reference.labels, minlength=len(names)) / reference.labels.size, shares) < 0.1


def test_the_stored_model_labels_as_the_run_did(stored):
    db, run_id, items, *_ = stored
    row, model = store.stored_model(db, "latest")
    assert row["run_id"] == run_id
    for modality in ("image", "text"):
        labels = model.classifiers.models[modality].predict(embeddings(items, f"{modality}_embedding"))
        got = dict(rows(db, "SELECT item_id, pairwise_class FROM item_labels WHERE run_id = ? AND modality = ?",
                        [run_id, modality]))
        names = np.array(model.classifiers.class_names)
        assert got == dict(zip(items.column("item_id").to_pylist(), names[labels].tolist(), strict=True))


def test_a_checked_model_is_held_so_that_labelling_finds_it_loaded(stored):
    """check_stored_model hands back the model it loaded: while the flow holds it, every label task's load_model
    returns that object instead of reading and checking the files again."""
    db, _, _, _, items_glob, classes_path = stored
    plan = inspect_sources(items_glob, classes_path, db=str(db), gold_column="label", chunk_size=300)
    using = check_stored_model.fn(plan, classes_path, str(db), "latest")
    assert load_model(**using["sealed"]) is using["held"]


def test_pairwise_models_lists_the_stored_models(stored, env, tmp_path):  # noqa: F811
    db, run_id, *_ = stored
    [(model_id, fitted_at)] = rows(db, "SELECT model_id, fitted_at FROM models")
    result = pairwise(env, "models", "--db", str(db))
    assert result.returncode == 0, result.stderr
    size = sum(path.stat().st_size for path in (db.parent / f"{db.name}.models" / model_id).iterdir())
    assert result.stdout == (f"{model_id}  run {run_id}  fitted {fitted_at.isoformat(timespec='seconds')}  "
                             f"fitted on 1,200 items  4 classes  image,text  labels 1,200 live items  "
                             f"{size / 1e6:,.1f} MB\n")
    missing = pairwise(env, "models", "--db", str(db.parent / "none.duckdb"))
    assert (missing.returncode, missing.stderr) == (2, f"pairwise: {db.parent / 'none.duckdb'}: no such DuckDB file\n")
    copy = tmp_path / "copy.duckdb"  # the file without its model store (copied alone): listed as it was
    shutil.copyfile(db, copy)
    gone = pairwise(env, "models", "--db", str(copy))
    assert gone.stdout.endswith(f"live items  0.0 MB  DAMAGED ({copy}.models/{model_id}): its folder {copy}.models/{model_id} "
                                "is missing; refit with a full run\n")
    # a truncated file was listed as fine while every run with the model was refused (helper 60's finding 13)
    shutil.copytree(f"{db}.models", f"{copy}.models")
    os.truncate(f"{copy}.models/{model_id}/classifiers.npz", 100)
    truncated = pairwise(env, "models", "--db", str(copy))
    assert truncated.returncode == 0 and truncated.stdout.endswith(
        f" MB  DAMAGED ({copy}.models/{model_id}): file classifiers.npz does not match its recorded hash; "
        "refit with a full run\n")
    os.chmod(f"{copy}.models/{model_id}", 0)  # a folder it cannot read: a traceback before
    unreadable = subprocess.run([*AS_A_USER, PAIRWISE, "models", "--db", str(copy)], env=env, capture_output=True,
                                text=True, timeout=120)
    os.chmod(f"{copy}.models/{model_id}", 0o700)
    assert unreadable.returncode == 0 and "Traceback" not in unreadable.stderr
    assert unreadable.stdout.endswith(f"DAMAGED ({copy}.models/{model_id}): cannot read its files (Permission "
                                      "denied)\n")


def test_a_tampered_stored_model_is_refused_in_one_line(stored, tmp_path, env):  # noqa: F811
    db, _, _, _, items_glob, classes_path = stored
    copy = tmp_path / "out.duckdb"
    shutil.copyfile(db, copy)
    shutil.copytree(f"{db}.models", f"{copy}.models")
    row = store.stored_model(copy, "latest")[0]  # the model itself is not held: it is loaded afresh below
    target = copy.parent / row["path"] / "refinement.npz"
    target.write_bytes(target.read_bytes()[:-10])  # truncated
    with pytest.raises(ModelMismatch) as caught:
        store.stored_model(copy, row["model_id"])
    assert str(caught.value) == (f"model {row['model_id']}: file refinement.npz does not match its recorded hash; "
                                  "refit with a full run")
    with pytest.raises(ValueError, match="model nope: no such stored model"):
        store.stored_model(copy, "nope")
    # labelling with it: exit 2, before anything is written
    assert refused(env, copy, items_glob, classes_path, "--model", "latest") == (
        f"pairwise: model {row['model_id']}: file refinement.npz does not match its recorded hash; refit with a full "
        "run\n")
    # the refit it advises reads the damaged model's class names for their order alone: it goes on without them
    # (a truncated classifiers.npz failed every full run with BadZipFile / EOFError, its row left 'running')
    plan = inspect_sources(items_glob, classes_path, db=str(copy), gold_column="label", chunk_size=300)
    for cut in (10, 4000):
        classifiers = copy.parent / row["path"] / "classifiers.npz"
        classifiers.write_bytes(classifiers.read_bytes()[:-cut])
        assert in_latest_order(plan, str(copy)) == plan


def sealed_model(db, run_id):
    folder = Staging.create(str(db), run_id).model
    _, classifiers, refinement, _ = fitted_parts(1)
    save_part(folder, "classifiers", classifiers)
    save_part(folder, "refinement", refinement)
    return {"folder": str(folder), "content_hash": seal(str(folder)), "model_id": f"m-{run_id}",
            "class_hash": "h", "dims": {"image": 16, "text": 12}, "params": {}}


def test_a_commit_that_fails_after_the_rename_leaves_no_model_and_the_next_run_removes_leftovers(tmp_path):
    db = tmp_path / "out.duckdb"
    summary = {"n_items": 1, "n_classes": 6, "modalities": ["image", "text"], "details": {}, "model_id": "m-r"}
    with disable_run_logger(), store.run_lock(db):
        attempt = start_run.fn(str(db), "r", {})
        model = sealed_model(db, "r") | {"params": {"not json": object()}}  # fails after the rename
        with pytest.raises(TypeError):
            store.commit_run(db, "r", attempt, {}, summary, model)
        assert rows(db, "SELECT count(*) FROM models") == [(0,)]
        assert rows(db, "SELECT status, model_id FROM runs") == [("running", None)]
        assert list((tmp_path / "out.duckdb.models").iterdir()) == []  # the renamed folder went with the row
        assert (Path(model["folder"]) / "model.json").is_file()  # back in staging, for the commit's retry
        store.commit_run(db, "r", attempt, {}, summary, model | {"params": {}})  # the retry, same folder
        (tmp_path / "out.duckdb.models" / "left-by-a-crash").mkdir()  # renamed, then the process was killed
        start_run.fn(str(db), "s", {})
    assert sorted(p.name for p in (tmp_path / "out.duckdb.models").iterdir()) == ["m-r"]
    assert rows(db, "SELECT model_id, run_id FROM models") == [("m-r", "r")]
    store.stored_model(db, "m-r")  # whole, and checked


def test_a_model_store_that_is_a_link_is_refused_before_anything_is_written(env, tmp_path):  # noqa: F811
    items, classes = make_catalog(300, 3, seed=1)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = tmp_path / "out.duckdb"
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", f"{db}.models")
    result = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet")
    assert result.returncode == 2
    assert result.stderr == (f"pairwise: {db}.models: the model store is a symbolic link; refusing to use it "
                             "(remove the link)\n")
    assert not db.exists() and list((tmp_path / "elsewhere").iterdir()) == []


def outputs(db, run_id):
    """A run's labels, confidences and review scores by item (and modality)."""
    return (rows(db, "SELECT item_id, modality, base_class, base_score, base_margin, pairwise_class, pairwise_margin, "
                     "given_gap, given_h2h, refined_class, refined_confidence FROM item_labels WHERE run_id = ? "
                     "ORDER BY item_id, modality", [run_id]),
            rows(db, "SELECT item_id, label, confidence, status, agreeing_modalities FROM joint_labels "
                     "WHERE run_id = ? ORDER BY item_id", [run_id]),
            rows(db, "SELECT item_id, suggested_label, p_given, zero_shot_p_given, label_aware_p_given "
                     "FROM annotation_issues WHERE run_id = ? ORDER BY item_id", [run_id]),
            # rank k's score: two items whose scores differ by less than float rounding may swap ranks
            rows(db, "SELECT rank, p_given FROM annotation_issues WHERE run_id = ? ORDER BY rank", [run_id]))


def assert_same_outputs(db, run, expected_run):
    """Labels exactly; scores to float32 rounding."""
    expected = outputs(db, expected_run)
    assert all(len(table) > 0 for table in expected)
    for got, want_table in zip(outputs(db, run), expected, strict=True):
        assert len(got) == len(want_table)
        for row, want in zip(got, want_table, strict=True):
            assert [v for v in row if not isinstance(v, float)] == [v for v in want if not isinstance(v, float)]
            np.testing.assert_allclose([v for v in row if isinstance(v, float)],
                                       [v for v in want if isinstance(v, float)], rtol=0, atol=1e-5)


def test_a_stored_model_labels_as_it_did_from_a_classes_file_with_its_rows_in_another_order(stored, tmp_path):
    """The same classes in another order are the model's classes: a night was refused until the next refit."""
    db, fitted_run, _, classes, items_glob, _ = stored
    reversed_path = tmp_path / "classes-reversed.parquet"
    pq.write_table(classes.take(list(range(classes.num_rows))[::-1]), reversed_path)
    summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=str(reversed_path), db=str(db),
                                                  gold_column="label", chunk_size=300, issues_below=1.0,
                                                  model="latest"))
    assert_same_outputs(db, summary["run_id"], fitted_run)


def test_a_stored_model_labels_each_item_the_same_whatever_the_partitioning(stored):
    db, fitted_run, _, _, items_glob, classes_path = stored
    [(model_id,)] = rows(db, "SELECT model_id FROM models")
    runs, n_partitions = [], []
    for chunk_size, model in ((250, "latest"), (700, model_id)):
        summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(db),
                                                      gold_column="label", chunk_size=chunk_size, issues_below=1.0,
                                                      model=model, seed=9))  # the model's seed draws the folds
        runs.append(summary["run_id"])
        n_partitions.append(summary["details"]["n_partitions"])
        assert summary["model_id"] == model_id and "pass1_s" not in summary["details"]["timings"]
    assert n_partitions == [4, 2]
    # the same (item, model), the same label, confidence and review score, and those of the run that fitted it:
    # labels exactly; scores to float32 rounding (record batches of other sizes change how BLAS blocks the
    # float32 products: 2e-6 at most here); each rank the same score, so only items tied to that rounding
    # (here once, 5.5e-8 apart) may trade ranks
    for run in runs:
        assert_same_outputs(db, run, fitted_run)
    assert rows(db, "SELECT run_id, model_id FROM runs WHERE run_id IN (?, ?) ORDER BY run_id", runs) == sorted(
        (run, model_id) for run in runs)
    assert rows(db, "SELECT count(*) FROM models") == [(1,)]  # labelling stores nothing new
    assert rows(db, "SELECT count(*) FROM pair_masks WHERE run_id IN (?, ?)", runs) == [(0,)]


def refused(env, db, items_glob, classes_path, *extra):  # noqa: F811
    before = rows(db, "SELECT count(*) FROM runs")
    result = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet",
                      *extra)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert rows(db, "SELECT count(*) FROM runs") == before  # nothing written
    return result.stderr


def test_a_stored_model_that_does_not_fit_the_catalog_is_refused_before_anything_is_written(stored, env,  # noqa: F811
                                                                                          tmp_path):
    db, _, items, classes, *_ = stored
    [(model_id,)] = rows(db, "SELECT model_id FROM models")
    more_items, more_classes = make_catalog(300, 5, seed=2)
    other = write_catalog(tmp_path / "five", more_items, more_classes)
    assert refused(env, db, *other, "--model", "latest") == (
        f"pairwise: model {model_id} was fitted on other classes (1 of the catalog's not in the model, 0 of the "
        "model's not in the catalog); refit with a full run (without --model)\n")
    column = classes.schema.get_field_index("image_embedding")
    moved = classes.set_column(column, "image_embedding", pa.array(
        [[value + 0.01 for value in row] for row in classes.column("image_embedding").to_pylist()],
        classes.schema.field("image_embedding").type))
    nudged = write_catalog(tmp_path / "nudged", items, moved)
    assert refused(env, db, *nudged, "--model", model_id) == (
        f"pairwise: model {model_id} was fitted on the same class names with other class embeddings; refit with a "
        "full run (without --model)\n")
    smaller_items, smaller_classes = make_catalog(300, 4, seed=2, modalities=(Modality("image", 64, 0.045),
                                                                             Modality("text", 384, 0.035)))
    narrow = write_catalog(tmp_path / "narrow", smaller_items, smaller_classes)
    assert refused(env, db, *narrow, "--model", "latest") == (
        f"pairwise: model {model_id} has other dimensions (image 512 in the model, 64 in the catalog); refit with a "
        "full run (without --model)\n")
    assert refused(env, db, *nudged, "--model", "nope") == (
        f"pairwise: model nope: no such stored model in {db} (`pairwise models --db {db}` lists them)\n")


def test_a_stored_model_that_cannot_label_the_catalog_is_refused_in_one_line_before_any_progress(  # noqa: F811
        stored, env, tmp_path):
    """Without --quiet too: the refusal came from the flow, after Prefect's start, under the progress lines
    (`Reclassifying ...`, `start Prefect`, `validate the sources`): four lines on stderr for bad input."""
    db, _, _, _, items_glob, classes_path = stored
    [(model_id,)] = rows(db, "SELECT model_id FROM models")
    copy = tmp_path / "copy.duckdb"  # the file without its model store
    shutil.copyfile(db, copy)
    gone = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(copy),
                    "--model", "latest")
    assert (gone.returncode, gone.stdout, gone.stderr) == (
        2, "", f"pairwise: model {model_id}: its folder {copy}.models/{model_id} is missing; refit with a full run\n")
    other = write_catalog(tmp_path / "five", *make_catalog(300, 5, seed=2))
    before = rows(db, "SELECT count(*) FROM run_attempts")
    unfit = pairwise(env, "run", "--items", other[0], "--classes", other[1], "--db", str(db), "--model", model_id)
    assert (unfit.returncode, unfit.stdout, unfit.stderr) == (
        2, "", f"pairwise: model {model_id} was fitted on other classes (1 of the catalog's not in the model, 0 of "
               "the model's not in the catalog); refit with a full run (without --model)\n")
    assert rows(db, "SELECT count(*) FROM run_attempts") == before


def test_a_stored_model_reviews_as_the_run_asks(stored, env, tmp_path):  # noqa: F811
    """--review and --issues-below apply to a run with a stored model as to a fit (they were ignored while
    runs.params recorded them); a route the model's review does not hold is refused in one line."""
    db, _, items, _, items_glob, classes_path = stored
    n_labelled = items.num_rows  # every item has a given label
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    shutil.copytree(f"{db}.models", f"{copy}.models")
    for review, routes in (("zero-shot", {"zero-shot"}), ("label-aware", {"label-aware"}), ("auto", {"both"})):
        summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(copy),
                                                      gold_column="label", model="latest", review=review,
                                                      issues_below=1.0))
        assert summary["details"]["review"]["route"] == routes.pop()
        assert rows(copy, "SELECT count(*), min(route), max(route) FROM annotation_issues WHERE run_id = ?",
                    [summary["run_id"]]) == [(n_labelled, summary["details"]["review"]["route"],
                                              summary["details"]["review"]["route"])]
    kept = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(copy),
                                               gold_column="label", model="latest", issues_below=0.5))
    [(n_kept, worst)] = rows(copy, "SELECT count(*), max(p_given) FROM annotation_issues WHERE run_id = ?",
                             [kept["run_id"]])
    assert n_kept < n_labelled and worst < 0.5
    # a model fitted without labels reviews them zero-shot, and has no label-aware route to offer
    unlabelled = tmp_path / "unlabelled.duckdb"
    reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(unlabelled)))
    summary = reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=str(unlabelled),
                                                  gold_column="label", model="latest", issues_below=1.0))
    assert summary["details"]["review"]["route"] == "zero-shot"
    assert rows(unlabelled, "SELECT count(*) FROM annotation_issues") == [(n_labelled,)]
    [(model_id,)] = rows(unlabelled, "SELECT model_id FROM models")
    assert refused(env, unlabelled, items_glob, classes_path, "--gold-column", "label", "--model", "latest",
                   "--review", "both") == (
        f"pairwise: model {model_id} was fitted without given labels; --review both needs a model fitted with it: "
        "refit with --gold-column and --review both, or label with --review auto\n")


def test_a_stored_model_asked_of_a_file_that_holds_none_says_to_fit_one_first(stored, env, tmp_path):  # noqa: F811
    """'model latest: no such stored model' sent a first-time user to `pairwise models`, which lists nothing."""
    db, _, _, _, items_glob, classes_path = stored
    empty = tmp_path / "new.duckdb"
    result = pairwise(env, "run", "--items", items_glob, "--classes", classes_path, "--db", str(empty), "--quiet",
                      "--model", "latest")
    assert (result.returncode, result.stderr) == (2, f"pairwise: model latest: {empty} holds no stored model yet: a "
                                                     "full run (without --model) fits and stores one\n")
    assert not empty.exists()
