"""Agreement and gold metrics, in DuckDB SQL over the staged labels (sql/metrics_*.sql).

Confusion counts are taken partition by partition and added up, so memory
stays bounded by a partition however large the catalog.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
from prefect import task

from tasks.policy import IO_TASK
from tasks.store import DUCKDB_MEMORY
from tasks.sql import statement
from tasks.staging import Staging, write_parquet


def agreement_metrics(label_paths: list[str], run_id: str) -> tuple[pa.Table, pa.Table]:
    """The agreement_metrics and confusion_counts rows of a run, from its item_labels files."""
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        counts = []
        for path in label_paths:
            con.read_parquet(path).create_view("labels", replace=True)
            counts.append(con.execute(statement("metrics_confusion")).to_arrow_table())
        con.register("confusion", pa.concat_tables(counts))
        params = {"run_id": run_id}
        metrics = con.execute(statement("metrics_agreement"), params).to_arrow_table()
        return metrics, con.execute(statement("metrics_confusion_total"), params).to_arrow_table()


def check_unique_items(paths: list[str]) -> None:
    """Raise a one-line ValueError naming duplicate item_ids, if any (memory-bounded: DuckDB spills)."""
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        con.read_parquet(paths, union_by_name=True).select("item_id, modality").create_view("staged")
        duplicates = con.execute(statement("check_duplicate_items")).fetchall()
    if duplicates:
        shown = ", ".join(f"{item_id} ({n}x)" for item_id, n in duplicates)
        raise ValueError(f"item_id must be unique; duplicated: {shown}")


@task(name="agreement-metrics", **IO_TASK)
def compute_metrics(label_paths: list[str], rejected_paths: list[str], staging: Staging, run_id: str) -> dict[str, str]:
    """Check that no item is counted twice, then stage the run's agreement_metrics and confusion_counts rows."""
    check_unique_items(label_paths + rejected_paths)
    metrics, confusion = agreement_metrics(label_paths, run_id)
    return {
        "agreement_metrics": write_parquet(staging.path("agreement_metrics", "part-00000.parquet"), metrics),
        "confusion_counts": write_parquet(staging.path("confusion_counts", "part-00000.parquet"), confusion),
    }
