"""Agreement and gold metrics, computed in DuckDB from the staged labels (sql/metrics_agreement.sql)."""

from __future__ import annotations

import duckdb
from prefect import task

from tasks.policy import IO_TASK
from tasks.sql import statement
from tasks.staging import Staging, write_parquet


@task(name="agreement-metrics", **IO_TASK)
def compute_metrics(label_paths: list[str], staging: Staging, run_id: str) -> str:
    """Stage the run's agreement_metrics rows; return their path."""
    with duckdb.connect() as con:
        con.read_parquet(label_paths).create_view("labels")
        table = con.execute(statement("metrics_agreement"), {"run_id": run_id}).to_arrow_table()
    return write_parquet(staging.path("agreement_metrics", "part-00000.parquet"), table)
