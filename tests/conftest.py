"""Shared test setup: hypothesis profiles, one Prefect test server per session, catalog files."""

import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
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


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves the process's environment as it found it. `pairwise` run in-process (flows.cli.main) sets
    Prefect's quiet defaults in os.environ, and the session's `server` fixture copies os.environ when it starts:
    a flow subprocess of a later test then logged nothing to its stderr (test_crash's worker_died passed alone
    and failed in the full suite)."""
    before, raise_exceptions = dict(os.environ), logging.raiseExceptions
    yield
    os.environ.clear()
    os.environ.update(before)
    logging.raiseExceptions = raise_exceptions


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


def write_hive_catalog(directory: Path, items: pa.Table, classes: pa.Table, key: str) -> tuple[str, str]:
    """Items as Spark's partitionBy(key) writes them: a folder ``key=value`` per value, the column in the folder
    names alone; classes as one file."""
    ds.write_dataset(items, directory / "items", format="parquet", partitioning=[key], partitioning_flavor="hive")
    pq.write_table(classes, directory / "classes.parquet")
    return str(directory / "items"), str(directory / "classes.parquet")


def written_otherwise(items: pa.Table) -> pa.Table:
    """The same rows as another writer might store them: the columns in reverse order and an extra one,
    item_id as a large string, embeddings as fixed-size float64 lists."""
    columns = {"batch": pa.array([7] * items.num_rows)}
    for name in reversed(items.column_names):
        column = items.column(name).combine_chunks()
        if name.endswith("_embedding"):
            values = pc.list_flatten(column).cast(pa.float64())
            column = pa.FixedSizeListArray.from_arrays(values, len(values) // items.num_rows)
        columns[name] = column.cast(pa.large_string()) if name == "item_id" else column
    return pa.table(columns)


@contextmanager
def reader_holding(db: str, seconds: float, *, read_only: bool = True):
    """Another process with the file open for ``seconds``: to read, as an analyst's session holds it, or to
    write, as another run's commit does."""
    holder = ("import duckdb, sys, time\n"
              f"con = duckdb.connect(sys.argv[1], read_only={read_only})\n"
              "print('open', flush=True)\n"
              f"time.sleep({seconds})\n")
    reader = subprocess.Popen([sys.executable, "-c", holder, db], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline() == "open\n"
        yield reader
    finally:
        if seconds > 10:
            reader.kill()
        reader.wait(timeout=60)


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


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A real `prefect server start` on a free port: (API URL, environment pointing at it)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log = (home / "server.log").open("w")
    prefect = str(Path(sys.executable).with_name("prefect"))
    process = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
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
    # every service of the server (scheduler, event persister, ...) ran through the session without an error
    assert server_log_errors(env) == []


def server_log_errors(env: dict[str, str]) -> list[str]:
    """The lines of the `server` fixture's log that report an error or a traceback."""
    lines = (Path(env["PREFECT_HOME"]) / "server.log").read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or "| ERROR" in line or "Error:" in line]
