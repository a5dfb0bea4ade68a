"""Dask workers that cannot import the project, or run another version of it (docs/operations.md, Dask): each pass
checks the workers first and refuses them in one line, instead of waiting for ever (a worker that cannot unpickle
a task dies, and the scheduler hands the task to the next) or labelling with other code."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from conftest import write_catalog
from flows.dask_workers import DaskWorkerMismatch
from flows.params import DASK_ALLOWED
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import make_catalog

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROOT = Path(__file__).resolve().parent.parent
BLOCKER = """import sys
class _Block:  # as if the project were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('tasks', 'flows', 'pairwise_core'):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _Block())
"""


def start_worker(address: str, pythonpath: Path, folder: Path) -> subprocess.Popen:
    """A real worker process of its own, with its own PYTHONPATH."""
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                             "--no-nanny", "--no-dashboard", "--local-directory", str(folder)],
                            env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(client, n: int) -> None:
    deadline = time.monotonic() + 60
    while len(client.scheduler_info()["workers"]) != n:
        assert time.monotonic() < deadline, "the workers did not join"
        time.sleep(0.2)


def test_workers_without_the_project_or_with_other_code_are_refused_in_one_line(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    items, classes = make_catalog(400, 3, seed=4)
    write_catalog(tmp_path / "in", items, classes, n_files=2, row_group_size=200)
    other = tmp_path / "other"  # another version: the same code, one line added
    for package in ("pairwise_core", "tasks", "flows"):
        shutil.copytree(ROOT / package, other / package, ignore=shutil.ignore_patterns("__pycache__"))
    with (other / "tasks" / "label.py").open("a") as changed:
        changed.write("# another version\n")
    blocked = tmp_path / "blocked"
    blocked.mkdir()
    (blocked / "sitecustomize.py").write_text(BLOCKER)

    def run(run_id):
        return reclassify_catalog(ReclassifyParams(
            items=str(tmp_path / "in" / "items-*.parquet"), classes=str(tmp_path / "in" / "classes.parquet"),
            db=str(tmp_path / "out.duckdb"), gold_column="label", chunk_size=200, run_id=run_id,
            dask_address=cluster.scheduler_address))

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        monkeypatch.setenv(DASK_ALLOWED, cluster.scheduler_address)
        for run_id, pythonpath, said in [
                ("other-code", other, rf"runs other code of this package \(code \w+ in {other}\) than the flow"),
                ("no-project", blocked, r"cannot import pairwise_core \(ModuleNotFoundError: No module named "
                                        r"'pairwise_core'\): every worker needs this package installed")]:
            worker = start_worker(cluster.scheduler_address, pythonpath, tmp_path / f"w-{run_id}")
            try:
                wait_for(client, 2)
                # without the check, the good worker took the tasks the other could not run: the run went on
                with pytest.raises(DaskWorkerMismatch, match=said):
                    run(run_id)
            finally:
                worker.terminate()
                worker.wait(30)
            wait_for(client, 1)
            with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
                status, error = con.execute("SELECT status, error FROM runs WHERE run_id = ?", [run_id]).fetchone()
            assert status == "failed" and error.startswith("DaskWorkerMismatch: the Dask worker tcp://"), error
        run("same-code")  # workers with the flow's own code pass the check
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM item_labels WHERE run_id = 'same-code'").fetchone()[0] == 2 * 400


def test_a_scheduler_that_goes_away_mid_run_is_named_in_the_runs_one_line(tmp_path, monkeypatch):
    import socket
    import threading

    from flows.dask_workers import DaskSchedulerLost

    items, classes = make_catalog(3000, 3, seed=4)
    write_catalog(tmp_path / "in", items, classes, n_files=2, row_group_size=100)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    monkeypatch.setenv(DASK_ALLOWED, address)
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", str(port), "--no-dashboard"], cwd=tmp_path,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = start_worker(address, ROOT, tmp_path / "w")
    db = tmp_path / "out.duckdb"
    outcome = {}

    def run():
        try:
            reclassify_catalog(ReclassifyParams(
                items=str(tmp_path / "in" / "items-*.parquet"), classes=str(tmp_path / "in" / "classes.parquet"),
                db=str(db), gold_column="label", chunk_size=100, run_id="lost", dask_address=address))
        except BaseException as error:  # noqa: BLE001 - what the run raised is the test's subject
            outcome["error"] = error

    try:
        flow = threading.Thread(target=run)
        flow.start()
        stats = Path(f"{db}.staging") / "lost" / "stats"
        deadline = time.monotonic() + 120
        while not (stats.is_dir() and any(stats.iterdir())):  # pass 1 is under way on the worker
            assert time.monotonic() < deadline and flow.is_alive(), outcome
            time.sleep(0.05)
        scheduler.kill()
        flow.join(120)
        assert not flow.is_alive()
    finally:
        scheduler.kill()
        worker.kill()
        scheduler.wait(30)
        worker.wait(30)
    # it was "FutureCancelledError: pair_stats-<hex> cancelled for reason: scheduler-connection-lost."
    assert isinstance(outcome.get("error"), DaskSchedulerLost), repr(outcome.get("error"))
    assert str(outcome["error"]) == (f"the Dask scheduler at {address} went away during the run (its connection was "
                                     "lost); nothing was committed: run again once it is back")
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs").fetchall() == [
            ("failed", f"DaskSchedulerLost: {outcome['error']}")]
        assert con.execute("SELECT count(*) FROM item_labels").fetchone()[0] == 0


def test_a_gather_whose_connection_closed_is_the_scheduler_lost_only_if_its_port_is_closed():
    """Killed as the client gathered, the scheduler failed the run with distributed's CommClosedError (once in CI)
    instead of its cancelled futures: it is the scheduler lost when nothing answers at its address any more."""
    import socket

    from distributed.comm.core import CommClosedError

    from flows.dask_workers import DaskSchedulerLost, scheduler_lost

    closed = CommClosedError("in <TCP (closed) ConnectionPool.gather>: ConnectionResetError")
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        assert scheduler_lost(closed, address) is None  # the scheduler still answers: its own error stands
    assert isinstance(scheduler_lost(closed, address), DaskSchedulerLost)
    assert scheduler_lost(RuntimeError("in <TCP (closed)>"), address) is None
    assert scheduler_lost(closed, None) is None  # not on Dask

