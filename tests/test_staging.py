"""The staging folder (`<db>.staging/`) as an attacker who can write the database's folder would try it.

Later tasks load what earlier ones staged there, and a run deletes what
earlier runs left in it: it must be private to the flow's user, and neither a
link nor another user's folder may be used or cleaned.
"""

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import write_catalog
from pairwise_core import make_catalog
from pairwise_core.model import Review
from tasks.models import load_part, save_part
from tasks.runs import start_run
from tasks.staging import StagedArrays, Staging, check_staging, prepare_staging, save_arrays
from tasks.store import run_lock
from test_cli import env, pairwise  # noqa: F401 (env is a fixture)


def register(db: Path, run_id: str) -> None:
    """The start-run task as the flow calls it: under the run lock."""
    with run_lock(db):
        start_run.fn(str(db), run_id, {})


NOBODY = 65534
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root, to give a folder or file to another user")


def catalog_args(tmp_path):
    items, classes = make_catalog(300, 3, seed=1)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = tmp_path / "db" / "out.duckdb"
    db.parent.mkdir()
    return db, ["run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet"]


def plant(folder):
    """A folder of someone's files, with a subfolder: what a run's clean-up would delete."""
    (folder / "old-run").mkdir(parents=True)
    (folder / "old-run" / "keep.txt").write_text("mine")
    (folder / "keep.txt").write_text("mine")


def planted(folder):
    return (folder / "old-run" / "keep.txt").read_text() + (folder / "keep.txt").read_text() == "minemine"


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_a_staging_folder_that_is_a_link_is_refused_and_its_target_survives(env, tmp_path):  # noqa: F811
    db, args = catalog_args(tmp_path)
    victim = tmp_path / "victim"
    plant(victim)
    os.symlink(victim, f"{db}.staging")
    result = pairwise(env, *args)
    assert result.returncode == 2
    assert result.stderr == (f"pairwise: {db}.staging: the staging folder is a symbolic link; refusing to use it "
                             "(remove the link)\n")
    assert planted(victim)
    assert not db.exists()  # nothing written
    # the clean-up itself refuses too, should the link appear after validation
    with pytest.raises(ValueError, match="symbolic link"):
        register(db, "r")
    assert planted(victim)


def test_a_db_name_without_room_for_the_folders_beside_it_is_refused_in_one_line(env, tmp_path):  # noqa: F811
    """A --db of 248-255 bytes: <db>.staging passed the file system's limit and the run died with a traceback
    (OSError: [Errno 36] File name too long; helper 60's finding 14)."""
    db, args = catalog_args(tmp_path)
    at_limit = tmp_path / ("a" * (255 - len(".staging") - len(".duckdb")) + ".duckdb")
    check_staging(str(at_limit))  # the longest name that fits
    too_long = tmp_path / ("a" * (256 - len(".staging") - len(".duckdb")) + ".duckdb")
    args[args.index("--db") + 1] = str(too_long)
    result = pairwise(env, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (f"pairwise: --db {too_long}: a file name of 248 bytes; at most 247 fit, as a run keeps "
                             "folders beside the file named after it (<name>.staging)\n")
    assert not list(tmp_path.glob("a*"))  # nothing written


def test_a_link_swapped_in_mid_run_leads_no_deletion_elsewhere(tmp_path):
    db = tmp_path / "out.duckdb"
    register(db, "r")
    staging = Staging.create(str(db), "r")
    staging.path("model", "classifiers.npz").write_bytes(b"")
    os.rename(f"{db}.staging", tmp_path / "moved")
    victim = tmp_path / "victim"
    plant(victim)
    (victim / "r").mkdir()
    (victim / "r" / "keep.txt").write_text("mine")
    os.symlink(victim, f"{db}.staging")
    staging.remove()
    assert planted(victim) and (victim / "r" / "keep.txt").exists()


def test_a_task_still_running_after_its_run_ended_recreates_no_staging(tmp_path):
    """After Ctrl-C the run removes its staging while a label thread may still be writing: the thread's next
    file fails, and neither the run's folder nor the staging folder comes back."""
    db = tmp_path / "out.duckdb"
    register(db, "r")
    staging = Staging.create(str(db), "r")
    staging.part("item_labels", 0).write_bytes(b"")
    staging.remove()
    with pytest.raises(FileNotFoundError):
        staging.part("item_labels", 1)
    with pytest.raises(FileNotFoundError):
        staging.model  # noqa: B018
    assert not Path(f"{db}.staging").exists()


def test_staging_folders_are_created_private_and_a_loose_one_is_made_private(tmp_path):
    db = tmp_path / "out.duckdb"
    register(db, "r")
    staged = Staging.create(str(db), "r").path("pass1", "part-00000.npz")
    assert mode(f"{db}.staging") == 0o700
    assert mode(staged.parent.parent) == 0o700  # the run's folder
    # a folder an earlier version left open (0755, the umask's default) is ours: it is made private, which
    # shuts everyone else out of everything under it at once
    os.chmod(f"{db}.staging", 0o755)
    prepare_staging(str(db))  # what the next run's start does, under the lock
    assert mode(f"{db}.staging") == 0o700


@as_root
def test_a_staging_folder_of_another_user_is_refused_and_left_alone(env, tmp_path):  # noqa: F811
    db, args = catalog_args(tmp_path)
    folder = tmp_path / "db" / "out.duckdb.staging"
    plant(folder)
    for path in (folder, folder / "old-run", folder / "old-run" / "keep.txt", folder / "keep.txt"):
        os.chown(path, NOBODY, NOBODY)
    result = pairwise(env, *args)
    assert result.returncode == 2
    assert result.stderr == (f"pairwise: {folder}: the staging folder belongs to uid {NOBODY}, not to this user "
                             f"(uid {os.getuid()}); refusing to use it\n")
    assert planted(folder) and not db.exists()


@pytest.fixture
def shared():
    """A folder every user can write, as the attacker can write the database's (pytest's tmp_path is under
    a 0700 folder that would shut the attacker out by itself)."""
    folder = Path(tempfile.mkdtemp(prefix="pairwise-shared-"))
    os.chmod(folder, 0o777)
    yield folder
    shutil.rmtree(folder)


@as_root
def test_another_user_can_neither_read_nor_write_a_runs_staging(shared):
    db = shared / "out.duckdb"
    register(db, "r")
    folder = Staging.create(str(db), "r").model
    save_part(folder, "review", Review("zero-shot", None, np.array([0.0, 1.0]), 0.5))
    model = folder / "review.npz"
    attack = (
        f"import os, sys; os.setgid({NOBODY}); os.setuid({NOBODY})\n"
        "db, model = sys.argv[1:]\n"
        "for attempt in (lambda: open(db + '.planted', 'w'), lambda: open(model, 'wb'),\n"
        "                lambda: open(model + '.new', 'wb'), lambda: os.listdir(db + '.staging')):\n"
        "    try:\n        attempt(); print('got-in')\n    except PermissionError:\n        print('refused')\n")
    result = subprocess.run([sys.executable, "-c", attack, str(db), str(model)], capture_output=True, text=True,
                            timeout=60)
    # it can write beside the database (the setup is real), and nothing of the staging folder
    assert result.stdout.split() == ["got-in", "refused", "refused", "refused"], result.stderr
    assert load_part(str(folder), "review").keep_below == 0.5


@as_root
def test_a_model_file_another_user_put_in_place_is_never_read(tmp_path):
    # what a swapped-in staging folder would hold: files their owner wrote
    save_part(tmp_path, "review", Review("zero-shot", None, np.array([0.0, 1.0]), 0.5))
    os.chown(tmp_path / "review.npz", NOBODY, NOBODY)
    with pytest.raises(PermissionError, match=f"written by uid {NOBODY}, not by this user"):
        load_part(str(tmp_path), "review")


def test_staged_arrays_round_trip_as_plain_npy_files(tmp_path: Path) -> None:
    """Names with a slash, a 0-d value, strings and an empty array come back as written, read whole or mapped;
    the files are .npy, which np.load reads with allow_pickle=False."""
    arrays = {"prior/0": np.arange(12, dtype=np.float32).reshape(4, 3), "keep_below": np.float64(0.5),
              "modalities": np.array(["image", "text"]), "points": np.zeros((0, 8), np.float32)}
    folder = save_arrays(tmp_path / "part-00000", arrays)
    staged = StagedArrays(folder)
    assert sorted(p.name for p in Path(folder).iterdir()) == [
        "keep_below.npy", "modalities.npy", "points.npy", "prior.0.npy"]
    for name, value in arrays.items():
        assert name in staged
        got = staged[name]
        assert got.dtype == np.asarray(value).dtype and got.shape == np.asarray(value).shape
        np.testing.assert_array_equal(got, value)
        np.testing.assert_array_equal(np.asarray(staged.mapped(name)), value)
    assert "review" not in staged


def test_a_removal_under_way_shows_no_half_removed_folder_to_a_task(tmp_path):
    """A flow run cancelled from the UI removes its staging while label tasks queued on its threads go on
    starting: one that found the run's folder there and its model folder already deleted failed with 'model
    ...: its folder ... is missing; refit with a full run' (28 task runs of one cancelled run). The folder goes
    at once (renamed, then deleted), so a task finds it whole or gone (RunEnded: its run ended)."""
    db = tmp_path / "out.duckdb"
    register(db, "r")
    staging = Staging.create(str(db), "r")
    folders = [f"p{k:03d}" for k in range(200)]
    for name in folders:
        for j in range(20):
            staging.path(name, f"{j}.parquet").write_bytes(b"")
    halfway, removed = threading.Event(), threading.Event()

    def watch() -> None:
        while not removed.is_set():
            if not all((staging.root / name).is_dir() for name in folders) and staging.root.is_dir():
                halfway.set()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        staging.remove()
    finally:
        removed.set()
        watcher.join()
    assert not halfway.is_set()
    assert not Path(f"{db}.staging").exists()


def test_a_task_whose_run_ended_is_not_retried():
    """Its run's folder will not come back: the cancelled run's queued tasks retried for 5 s (1 s, then 4 s)."""
    from prefect.states import Failed

    from tasks.policy import is_transient
    from tasks.staging import RunEnded

    assert not is_transient(None, None, Failed(data=RunEnded("its run ended and removed its folder")))
