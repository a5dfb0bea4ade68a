"""Shared test setup: hypothesis profiles, one Prefect test server per session, catalog files."""

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

settings.register_profile(
    "ci", max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server for every flow test of the session (slow to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write_catalog(directory: Path, items: pa.Table, classes: pa.Table, *, n_files: int = 1, row_group_size: int = 500):
    """Items as n_files Parquet files (with several row groups each), classes as one file."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = [round(i * items.num_rows / n_files) for i in range(n_files + 1)]
    for k in range(n_files):
        part = items.slice(bounds[k], bounds[k + 1] - bounds[k])
        pq.write_table(part, directory / f"items-{k}.parquet", row_group_size=row_group_size)
    pq.write_table(classes, directory / "classes.parquet")
    return str(directory / "items-*.parquet"), str(directory / "classes.parquet")
