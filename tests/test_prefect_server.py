"""Against a real `prefect server start`: a flow run, its artifacts, and `prefect deploy --all`."""

import subprocess
import sys
from pathlib import Path

from conftest import api, write_catalog
from pairwise_core import make_catalog

ROOT = Path(__file__).resolve().parents[1]
PREFECT = str(Path(sys.executable).with_name("prefect"))


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
    # the server is shared by the session: other tests leave their runs there too
    runs = api(url, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 200})
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
