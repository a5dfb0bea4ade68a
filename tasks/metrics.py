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


def agreement_metrics(label_paths: list[str], joint_paths: list[str], run_id: str) -> dict[str, pa.Table]:
    """The agreement_metrics, confusion_counts and calibration_bins rows of a run, from its staged labels."""
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        counts, bins = [], []
        for labels, joint in zip(label_paths, joint_paths, strict=True):
            con.read_parquet(labels).create_view("labels", replace=True)
            con.read_parquet(joint).create_view("joint", replace=True)
            counts += [con.execute(statement(name)).to_arrow_table()
                       for name in ("metrics_confusion", "metrics_confusion_joint")]
            bins.append(con.execute(statement("metrics_calibration")).to_arrow_table())
        con.register("confusion", pa.concat_tables(counts, promote_options="permissive"))
        con.register("calibration", pa.concat_tables(bins, promote_options="permissive"))
        params = {"run_id": run_id}
        metrics = pa.concat_tables([
            con.execute(statement("metrics_agreement"), params).to_arrow_table(),
            con.execute(statement("metrics_ece"), params).to_arrow_table(),
        ], promote_options="permissive")
        return {
            "agreement_metrics": metrics,
            "confusion_counts": con.execute(statement("metrics_confusion_total"), params).to_arrow_table(),
            "calibration_bins": con.execute(statement("metrics_calibration_total"), params).to_arrow_table(),
        }


@task(name="agreement-metrics", **IO_TASK)
def compute_metrics(
    label_paths: list[str], joint_paths: list[str], staging: Staging, run_id: str
) -> dict[str, str]:
    """Stage the run's agreement_metrics, confusion_counts and calibration_bins rows (item ids are unique:
    validation checked them)."""
    tables = agreement_metrics(label_paths, joint_paths, run_id)
    return {name: write_parquet(staging.path(name, "part-00000.parquet"), table) for name, table in tables.items()}
