"""Against a real `prefect server start`: a flow run, its artifacts, and `prefect deploy --all`."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import write_catalog
from pairwise_core import make_catalog

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(url: str, path: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{url}{path}", data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                               env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            api(url, "/health")
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"prefect server exited: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        process.kill()
        pytest.fail("prefect server did not become healthy in 120 s")
    yield url, {**env, "PREFECT_API_URL": url}
    process.terminate()
    process.wait(timeout=30)
    log.close()


def test_a_run_against_the_server_completes_with_artifacts(server, tmp_path):
    url, env = server
    items, classes = make_catalog(800, 4, seed=2)
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=2)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pairwise")), "run", "--items", items_glob, "--classes", classes_path,
         "--db", str(tmp_path / "out.duckdb"), "--gold-column", "label", "--run-id", "server-test"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    runs = api(url, "/flow_runs/filter", {"flow_runs": {"name": {}}, "limit": 10})
    mine = [r for r in runs if r["parameters"].get("params", {}).get("run_id") == "server-test"]
    assert len(mine) == 1 and mine[0]["state"]["type"] == "COMPLETED"
    artifacts = api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [mine[0]["id"]]}}})
    kinds = {(a["key"], a["type"]) for a in artifacts}
    assert ("pairwise-run-summary", "table") in kinds
    assert ("pairwise-agreement-report", "markdown") in kinds
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress and progress[0]["data"] == 100.0


def test_deploy_all_registers_the_nightly_cron_schedule(server):
    url, env = server
    subprocess.run([PREFECT, "work-pool", "create", "pairwise", "--type", "process"], env=env, cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    result = subprocess.run([PREFECT, "--no-prompt", "deploy", "--all"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    deployments = api(url, "/deployments/filter", {"deployments": {"name": {"any_": ["nightly"]}}})
    assert len(deployments) == 1
    deployment = deployments[0]
    assert deployment["work_pool_name"] == "pairwise"
    assert deployment["entrypoint"] == "flows/reclassify.py:reclassify_catalog"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 2 * * *"]
    assert deployment["parameters"]["params"]["db"] == "catalog/pairwise.duckdb"
