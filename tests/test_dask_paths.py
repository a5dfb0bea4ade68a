"""A run on Dask with relative paths, whose workers work in another folder (a deployment's paths are relative to
its pull step's folder): the flow hands them absolute paths (docs/operations.md, Dask)."""

import json
import os

import duckdb
import pytest

from conftest import write_catalog
from flows.params import DASK_ALLOWED
from flows.reclassify import ReclassifyParams, reclassify_catalog
from pairwise_core import make_catalog

pytestmark = pytest.mark.usefixtures("prefect_harness")


def rows(db, sql):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_relative_paths_reach_workers_that_work_in_another_folder(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    items, classes = make_catalog(800, 4, seed=6, label_noise=0.05)
    write_catalog(tmp_path / "catalog", items, classes, n_files=2, row_group_size=200)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(db, **extra):
        return reclassify_catalog(ReclassifyParams(
            items="catalog/items-*.parquet", classes="catalog/classes.parquet", db=db, gold_column="label",
            chunk_size=200, seed=2, **extra))

    monkeypatch.chdir(tmp_path)
    run("catalog/local.duckdb")
    monkeypatch.chdir(elsewhere)  # the worker processes start here, and stay here
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        assert set(client.run(os.getcwd).values()) == {str(elsewhere)}
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv(DASK_ALLOWED, cluster.scheduler_address)
        run("catalog/dask.duckdb", dask_address=cluster.scheduler_address)
    labels = "SELECT item_id, modality, base_class, pairwise_class, refined_class FROM item_labels ORDER BY ALL"
    assert rows(tmp_path / "catalog/dask.duckdb", labels) == rows(tmp_path / "catalog/local.duckdb", labels)
    assert len(rows(tmp_path / "catalog/dask.duckdb", labels)) == 2 * 800
    recorded = json.loads(rows(tmp_path / "catalog/dask.duckdb", "SELECT params FROM runs")[0][0])
    assert (recorded["items"], recorded["db"]) == (str(tmp_path / "catalog/items-*.parquet"),
                                                   str(tmp_path / "catalog/dask.duckdb"))
    assert not list(elsewhere.iterdir())  # nothing was written or staged where the workers work
