"""Who may point a run at a Dask scheduler, whose results the flow unpickles (docs/operations.md, the trust boundary)."""

import re

import pytest
from pydantic import ValidationError

from conftest import write_catalog
from flows.params import DASK_ALLOWED, ReclassifyParams
from flows.reclassify import reclassify_catalog
from pairwise_core import make_catalog
from test_cli import env, pairwise  # noqa: F401 (env is a fixture)

THEIRS = "tcp://203.0.113.7:8786"  # a scheduler the attacker runs
REFUSED = (f"{THEIRS} is not an allowed Dask scheduler: list it in {DASK_ALLOWED} (comma-separated) in the "
           "environment of the flow's process")
REFUSAL = re.escape(REFUSED)


@pytest.fixture
def small_catalog(tmp_path):
    items, classes = make_catalog(300, 3, seed=1)
    return write_catalog(tmp_path / "in", items, classes)


def test_only_the_schedulers_the_environment_lists_are_allowed(monkeypatch):
    monkeypatch.delenv(DASK_ALLOWED, raising=False)
    with pytest.raises(ValidationError, match=REFUSAL):  # unset: none
        ReclassifyParams(items="i", classes="c", dask_address=THEIRS)
    monkeypatch.setenv(DASK_ALLOWED, "tcp://scheduler:8786, tcp://10.0.0.2:8786")
    with pytest.raises(ValidationError, match=REFUSAL):
        ReclassifyParams(items="i", classes="c", dask_address=THEIRS)
    assert ReclassifyParams(items="i", classes="c", dask_address="tcp://10.0.0.2:8786").dask_address == (
        "tcp://10.0.0.2:8786")
    assert ReclassifyParams(items="i", classes="c").dask_address is None  # local threads need nothing


@pytest.mark.usefixtures("prefect_harness")
def test_a_deployment_parameter_cannot_bring_its_own_scheduler(tmp_path, small_catalog, monkeypatch):
    monkeypatch.delenv(DASK_ALLOWED, raising=False)
    items_glob, classes_path = small_catalog
    db = tmp_path / "out.duckdb"
    # parameters as a deployment's run receives them: JSON, validated by Prefect against the model
    with pytest.raises(Exception, match=REFUSAL) as refused:
        reclassify_catalog(params={"items": items_glob, "classes": classes_path, "db": str(db),
                                   "dask_address": THEIRS})
    assert REFUSED in str(refused.value).splitlines()[-1]  # the reason on one line
    assert not db.exists() and not (tmp_path / "out.duckdb.staging").exists()  # refused before anything ran


def test_the_scheduler_on_pairwise_runs_own_command_line_needs_no_allow_list(env, tmp_path, small_catalog):  # noqa: F811
    from distributed import LocalCluster

    items_glob, classes_path = small_catalog
    environment = {k: v for k, v in env.items() if k != DASK_ALLOWED}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = pairwise(environment, "run", "--items", items_glob, "--classes", classes_path,
                          "--db", str(tmp_path / "out.duckdb"), "--dask-address", cluster.scheduler_address, "--quiet")
    assert result.returncode == 0, result.stderr
