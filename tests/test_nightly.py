"""The nightly deployment as an operator runs it, against a real `prefect server start`.

`prefect deploy --all` from prefect.yaml, then the server's scheduler must
create the next nights' runs, and a worker (`pairwise worker`) must pick up a
run of the deployment, run it to Completed and stop on one SIGTERM.
"""

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import duckdb
import pytest

from conftest import api, server_log_errors
from tasks.demo_catalog import write_demo_catalog

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOYMENT = "reclassify-catalog/nightly"


@pytest.fixture(scope="module")
def nightly(server):
    """The work pool and the deployments of prefect.yaml, created the way docs/operations.md says: its record."""
    url, env = server
    subprocess.run([str(BIN / "prefect"), "work-pool", "create", "pairwise", "--type", "process"], env=env,
                   cwd=ROOT, check=True, capture_output=True, timeout=120)
    result = subprocess.run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    deployments = api(url, "/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
    assert len(deployments) == 1
    return deployments[0]


def test_deploy_all_registers_the_nightly_cron_schedule(nightly):
    assert nightly["work_pool_name"] == "pairwise"
    assert nightly["entrypoint"] == "flows/reclassify.py:reclassify_catalog"
    assert [s["schedule"]["cron"] for s in nightly["schedules"]] == ["0 2 * * *"]
    assert nightly["parameters"]["params"]["db"] == "catalog/pairwise.duckdb"
    assert (nightly["parameters"]["params"]["model"], nightly["parameters"]["params"]["incremental"]) == (
        "latest", True)


def test_deploy_all_registers_the_weekly_refit(server, nightly):
    url, _ = server
    (weekly,) = api(url, "/deployments/filter", {"deployments": {"name": {"any_": ["weekly"]}}})
    assert [s["schedule"]["cron"] for s in weekly["schedules"]] == ["0 4 * * 0"]  # Sundays
    assert "model" not in weekly["parameters"]["params"]  # a full run: it fits a new model


def next_nights(count: int) -> list[datetime]:
    """The next ``count`` 02:00 UTC from now."""
    start = datetime.now(timezone.utc)
    first = start.replace(hour=2, minute=0, second=0, microsecond=0)
    first += timedelta(days=first < start)
    return [first + timedelta(days=k) for k in range(count)]


def test_the_scheduler_creates_the_next_nights_runs(server, nightly):
    """Fails when the server's scheduler service cannot insert runs (SQLAlchemy 2.1 with Prefect 3.8.8)."""
    url, env = server
    deadline = time.monotonic() + 120  # a new deployment within seconds, then every deployment each 60 s
    while True:
        runs = api(url, "/flow_runs/filter", {
            "flow_runs": {"deployment_id": {"any_": [nightly["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC"})
        if len(runs) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(2)
    errors = server_log_errors(env)
    assert len(runs) >= 3, f"{len(runs)} scheduled runs after 120 s; the server logged: {errors[:3]}"
    starts = [datetime.fromisoformat(run["expected_start_time"].replace("Z", "+00:00")) for run in runs[:3]]
    # the scheduler ran a little earlier: 02:00 UTC may have passed in between
    assert starts in (next_nights(3), [night - timedelta(days=1) for night in next_nights(3)]), starts
    assert all(run["parameters"] == nightly["parameters"] for run in runs)
    assert errors == []


def test_a_worker_runs_a_night_to_completion_and_stops_on_one_sigterm(server, nightly, tmp_path):
    """A deployment run with --params, as docs/operations.md shows it, on the demo's tables, through a worker
    started in the background (SIGINT ignored, as `cmd &` in a script or nohup leaves it)."""
    url, env = server
    db = tmp_path / "night.duckdb"
    items, classes = write_demo_catalog.fn(str(db), 600, 4, 0)
    params = {"params": {"items": items, "classes": classes, "db": str(db), "run_id": "worker-night"}}
    created = subprocess.run([str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--params", json.dumps(params)],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    worker = subprocess.Popen([str(BIN / "pairwise"), "worker", "--pool", "pairwise"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        state, deadline = None, time.monotonic() + 300
        while state not in ("COMPLETED", "FAILED", "CRASHED") and time.monotonic() < deadline:
            time.sleep(2)
            mine = [run for run in api(url, "/flow_runs/filter", {
                "flow_runs": {"deployment_id": {"any_": [nightly["id"]]}}, "limit": 50})
                if run["parameters"]["params"].get("run_id") == "worker-night"]
            state = mine[0]["state"]["type"] if mine else None
        assert state == "COMPLETED", state
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)  # raises if one SIGTERM did not stop it
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, output
    assert "stopped!" in output, output
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, n_items FROM runs WHERE run_id = 'worker-night'").fetchall() == [
            ("succeeded", 600)]
        assert con.execute("SELECT count(*) FROM consensus_labels WHERE run_id = 'worker-night'").fetchone() == (600,)


def flow_run(url: str, deployment_id: str, run_id: str) -> dict | None:
    """The deployment's flow run whose params name this run id (None: not created yet)."""
    mine = [run for run in api(url, "/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}},
                                                          "limit": 50})
            if run["parameters"]["params"].get("run_id") == run_id]
    return mine[0] if mine else None


def labelling_started(url: str, deployment_id: str, run_id: str) -> bool:
    """Some pass-1 task of the flow run has completed: the run has its row in runs, and rows being staged."""
    run = flow_run(url, deployment_id, run_id)
    return run is not None and bool(api(url, "/task_runs/filter", {
        "task_runs": {"flow_run_id": {"any_": [run["id"]]}, "state": {"type": {"any_": ["COMPLETED"]}},
                      "name": {"like_": "pair-stats"}}, "limit": 1}))


@contextmanager
def deployment_run_and_worker(env: dict[str, str], params: dict) -> Iterator[subprocess.Popen]:
    """A flow run of the nightly deployment with ``params``, and a worker of its pool started to take it;
    the worker is killed after, if the test has not stopped it."""
    created = subprocess.run([str(BIN / "prefect"), "deployment", "run", DEPLOYMENT, "--params", json.dumps(params)],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    worker = subprocess.Popen([str(BIN / "pairwise"), "worker", "--pool", "pairwise"], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield worker
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def test_a_worker_stopped_mid_run_lets_its_flow_run_record_its_end(server, nightly, tmp_path):
    """Stopping, Prefect's worker killed its flow runs without a word: they stayed Running in Prefect and
    'running' in runs. One SIGTERM to the worker now ends its flow run crashed, and its run failed."""
    url, env = server
    db = tmp_path / "stopped.duckdb"
    items, classes = write_demo_catalog.fn(str(db), 40_000, 8, 0)
    params = {"params": {"items": items, "classes": classes, "db": str(db), "run_id": "stopped-night",
                         "chunk_size": 250}}  # 160 partitions: still running when the worker is stopped
    with deployment_run_and_worker(env, params) as worker:
        deadline = time.monotonic() + 300
        while not labelling_started(url, nightly["id"], "stopped-night") and time.monotonic() < deadline:
            time.sleep(0.5)
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 0, output
    assert "Traceback" not in output, output
    assert flow_run(url, nightly["id"], "stopped-night")["state"]["type"] == "CRASHED"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT status, error FROM runs WHERE run_id = 'stopped-night'").fetchall() == [
            ("failed", "TerminationSignal")]
        assert con.execute("SELECT status FROM run_attempts WHERE run_id = 'stopped-night'").fetchall() == [
            ("failed",)]
        assert con.execute("SELECT count(*) FROM consensus_labels WHERE run_id = 'stopped-night'").fetchone() == (0,)


def test_a_deployment_run_refused_for_its_parameters_logs_why_in_one_line(server, nightly, tmp_path):
    """A scheduler PAIRWISE_DASK_ALLOWED does not list: the flow run's log (the UI's Logs tab) was a line
    'Engine execution exited with unexpected exception' and Prefect's traceback, the reason at its end."""
    url, env = server
    params = {"params": {"items": "items.parquet", "classes": "classes.parquet", "db": str(tmp_path / "x.duckdb"),
                         "run_id": "refused-night", "dask_address": "tcp://203.0.113.7:8786"}}
    with deployment_run_and_worker(env, params) as worker:
        messages: list[str] = []
        deadline = time.monotonic() + 300
        while not any(m.startswith("Engine execution exited") for m in messages) and time.monotonic() < deadline:
            time.sleep(1)
            run = flow_run(url, nightly["id"], "refused-night")
            messages = [log["message"] for log in api(url, "/logs/filter", {
                "logs": {"flow_run_id": {"any_": [run["id"]]}}, "limit": 200})] if run else []
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=120)
    assert flow_run(url, nightly["id"], "refused-night")["state"]["type"] == "FAILED"
    assert [m for m in messages if "Traceback" in m] == []
    assert any(m.startswith("Engine execution exited with unexpected exception: ParameterTypeError: ")
               and "tcp://203.0.113.7:8786 is not an allowed Dask scheduler" in m for m in messages), messages


def test_the_automation_file_marks_silent_flow_runs_crashed(server):
    """prefect-automations.yaml as docs/operations.md has it created: a flow run killed with its worker stayed
    Running for good (checked by hand: with it, such a run was marked Crashed once its heartbeats stopped)."""
    url, env = server
    created = subprocess.run([str(BIN / "prefect"), "automation", "create", "--from-file",
                              "prefect-automations.yaml"], env=env, cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert created.returncode == 0, created.stdout + created.stderr
    (automation,) = [a for a in api(url, "/automations/filter", {})
                     if a["name"] == "pairwise-crash-silent-flow-runs"]
    trigger = automation["trigger"]
    assert (trigger["posture"], trigger["after"], trigger["within"]) == (
        "Proactive", ["prefect.flow-run.heartbeat"], 600.0)
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed"} <= set(trigger["expect"])
    assert [(a["type"], a["state"]) for a in automation["actions"]] == [("change-flow-run-state", "CRASHED")]
