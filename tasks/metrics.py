"""Agreement and gold metrics, in DuckDB SQL over the staged labels (sql/metrics_*.sql).

Confusion counts are taken partition by partition and added up, so memory
stays bounded by a partition however large the catalog.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from prefect import task

from tasks.policy import IO_TASK
from tasks.sql import statement
from tasks.staging import Staging, write_parquet


def agreement_metrics(label_paths: list[str], run_id: str) -> pa.Table:
    """The agreement_metrics rows of a run, from its item_labels files."""
    with duckdb.connect() as con:
        counts = []
        for path in label_paths:
            con.read_parquet(path).create_view("labels", replace=True)
            counts.append(con.execute(statement("metrics_confusion")).to_arrow_table())
        con.register("confusion", pa.concat_tables(counts))
        return con.execute(statement("metrics_agreement"), {"run_id": run_id}).to_arrow_table()


@task(name="agreement-metrics", **IO_TASK)
def compute_metrics(label_paths: list[str], staging: Staging, run_id: str) -> str:
    """Stage the run's agreement_metrics rows; return their path."""
    return write_parquet(staging.path("agreement_metrics", "part-00000.parquet"), agreement_metrics(label_paths, run_id))
