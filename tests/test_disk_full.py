"""A run that fills the disk with its staged rows records why it failed, and the next run, with room, succeeds.

The disk is a small tmpfs, which needs root (the CI machine runs as root); elsewhere the test is skipped.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from conftest import write_catalog
from pairwise_core import make_catalog
from tasks import store

PAIRWISE = str(Path(sys.executable).with_name("pairwise"))


@pytest.fixture
def small_disk(tmp_path):
    """An 8 MB tmpfs: room for the DuckDB file, not for a 40,000-item run's staged rows."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=True)


def test_a_full_disk_is_recorded_as_the_failure_and_the_next_run_succeeds(server, tmp_path, small_disk):
    _, env = server
    items, classes = make_catalog(40_000, 13, seed=3)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes, n_files=2, row_group_size=5_000)
    db = small_disk / "out.duckdb"
    command = [PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
               "--chunk-size", "10000", "--quiet"]

    full = subprocess.run(command + ["--run-id", "full-disk"], env=env, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1
    assert full.stderr.strip().splitlines() == ["pairwise: run failed: OSError: [Errno 28] No space left on device"]
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [
            ("failed", "OSError: [Errno 28] No space left on device")]
    assert not Path(f"{db}.staging").exists()  # its staged rows were removed first, to make room for the record

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    after = subprocess.run(command + ["--run-id", "after"], env=env, capture_output=True, text=True, timeout=300)
    assert after.returncode == 0, after.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert dict(con.execute("SELECT run_id, status FROM runs").fetchall()) == {"full-disk": "failed",
                                                                                   "after": "succeeded"}
        assert con.execute("SELECT count(*) FROM current_labels").fetchone() == (2 * 40_000,)


def test_a_run_does_not_start_without_room_to_record_its_end(server, tmp_path, small_disk):
    """A night on a disk with some 48 KB free: its registration committed, then neither its staging nor the
    record of its failure could write, and the run stayed 'running' (a staging folder left) until a later run
    marked it abandoned. It now stops before it registers, in one line, and the file is as it was."""
    _, env = server
    items, classes = make_catalog(2_000, 5, seed=4)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = small_disk / "out.duckdb"
    command = [PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet"]
    subprocess.run(["mount", "-o", "remount,size=128m", str(small_disk)], check=True)  # room for a commit
    assert subprocess.run(command + ["--run-id", "first"], env=env, capture_output=True, timeout=300).returncode == 0
    filler = small_disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1K",
                    f"count={os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize // 1024 - 48}"],
                   check=True, capture_output=True)

    night = subprocess.run(command + ["--run-id", "night", "--model", "latest", "--incremental"], env=env,
                           capture_output=True, text=True, timeout=300)
    filler.unlink()
    assert night.returncode == 1
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT run_id, status FROM runs").fetchall() == [("first", "succeeded")]
        assert con.execute("SELECT run_id, status FROM run_attempts").fetchall() == [("first", "succeeded")]
    assert not Path(f"{db}.staging").exists()
    assert night.stderr.strip().splitlines() == [
        f"pairwise: run failed: NoRoom: {db}: its disk has 0.0 MB free, less than the 4 MB a run needs to record its "
        "start and end, so the run did not start and nothing was written: free space on that disk, then run again"]


def test_a_temporary_server_on_a_full_disk_is_refused_in_one_line_before_it_starts(tmp_path, small_disk):
    """PREFECT_HOME (the temporary server's SQLite database) on a full disk: the server failed as it started,
    Prefect took that for a port taken and started another, and another, for the whole wait, then the command
    blamed a slow start ("not ready 120 s after its start"), the full disk never named."""
    items, classes = make_catalog(500, 3, seed=1)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    subprocess.run(["dd", "if=/dev/zero", f"of={small_disk / 'filler'}", "bs=1M"], capture_output=True)
    env = {name: value for name, value in os.environ.items() if name != "PREFECT_API_URL"}
    env |= {"PREFECT_HOME": str(small_disk / "home"), "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "20"}
    db = tmp_path / "out.duckdb"
    result = subprocess.run([PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db),
                             "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert result.stderr == (
        f"pairwise: Prefect's temporary server keeps its database in {small_disk / 'home' / 'prefect.db'} "
        "(PREFECT_HOME), and that disk has 0.0 MB free, less than the 16 MB it needs: free space there, or set "
        "PREFECT_HOME to a folder on another disk; no run started and nothing was written\n")
    assert not db.exists()


def test_a_commit_is_not_started_without_room_and_the_earlier_run_stays_whole(server, tmp_path):
    """A COMMIT that fails on a full disk can leave the file inconsistent, so a run refuses to start one
    without room (here: PAIRWISE_MIN_FREE_MB more than any disk has) and fails in one line, the file as it was."""
    _, env = server
    items, classes = make_catalog(2_000, 5, seed=4)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = tmp_path / "out.duckdb"
    command = [PAIRWISE, "run", "--items", items_glob, "--classes", classes_path, "--db", str(db), "--quiet"]
    assert subprocess.run(command + ["--run-id", "first"], env=env, capture_output=True, timeout=300).returncode == 0
    with duckdb.connect(str(db), read_only=True) as con:
        before = con.execute("SELECT * FROM catalog_labels ORDER BY item_id").fetchall()

    short = subprocess.run(command + ["--run-id", "short", "--model", "latest"], env=env | {
        "PAIRWISE_MIN_FREE_MB": str(2**40)}, capture_output=True, text=True, timeout=300)
    assert short.returncode == 1
    [line] = short.stderr.strip().splitlines()
    assert re.fullmatch(rf"pairwise: run failed: NoRoom: {re.escape(str(db))}: its disk has [\d,]+ MB free and this "
                        r"run's commit may need [\d,]+ MB \([\d.]+ MB of staged rows\), so nothing was committed and "
                        r"the file is as it was: free space on that disk, then run again", line), line
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT * FROM catalog_labels ORDER BY item_id").fetchall() == before
        status, error = con.execute("SELECT status, error FROM runs WHERE run_id = 'short'").fetchone()
        assert con.execute("SELECT count(*) FROM item_labels WHERE run_id = 'short'").fetchone() == (0,)
    assert (status, error.split(":")[0]) == ("failed", "NoRoom")
    assert not Path(f"{db}.staging", "short").exists()


@pytest.mark.parametrize("given", ["abc", "-1", "inf", "nan", "64MB"])
def test_a_floor_of_free_space_that_is_not_a_number_of_megabytes_is_refused_by_name(monkeypatch, given):
    monkeypatch.setenv("PAIRWISE_MIN_FREE_MB", given)
    with pytest.raises(ValueError, match=rf"^PAIRWISE_MIN_FREE_MB must be a number of megabytes, 0 or more, not "
                                         rf"'{re.escape(given)}'$"):
        store.min_free_bytes()


@pytest.mark.parametrize(("given", "megabytes"), [("", store.MIN_FREE_MB), (" ", store.MIN_FREE_MB), ("0", 0),
                                                  ("128", 128), ("0.5", 0.5)])
def test_the_floor_of_free_space_is_read_in_megabytes(monkeypatch, given, megabytes):
    monkeypatch.setenv("PAIRWISE_MIN_FREE_MB", given)
    assert store.min_free_bytes() == megabytes * 2**20
