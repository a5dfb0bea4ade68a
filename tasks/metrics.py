"""Agreement and gold metrics, in DuckDB SQL (sql/metrics_*.sql) over the confusion counts and calibration sums
that the labelling tasks counted partition by partition (tasks/metric_counts.py): small tables, whatever the
catalog's size.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task

from tasks.policy import IO_TASK
from tasks.store import DUCKDB_MEMORY
from tasks.sql import statement
from tasks.staging import Staging, write_parquet

PARENT_SUFFIX = "_parent"  # agreement_metrics.method at the parent level: base_parent, pairwise_parent, refined_parent


def agreement_metrics(confusion_paths: list[str], calibration_paths: list[str], run_id: str,
                      parent_level: bool = False) -> dict[str, pa.Table]:
    """The agreement_metrics, confusion_counts and calibration_bins rows of a run, from the counts its
    partitions staged (tasks/metric_counts.py).

    With ``parent_level`` the agreement_metrics rows are repeated at the parent level (the same SQL over the
    parents' counts). Their confusion counts and calibration sums are not kept: those tables describe the
    leaf classes.
    """
    params = {"run_id": run_id}
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        _use_level(con, confusion_paths, calibration_paths, "leaf")
        metrics = [_metrics(con, params)]
        tables = {
            "confusion_counts": con.sql(statement("metrics_confusion_total"), params=params).to_arrow_table(),
            "calibration_bins": con.sql(statement("metrics_calibration_total"), params=params).to_arrow_table(),
        }
        if parent_level:
            _use_level(con, confusion_paths, calibration_paths, "parent")
            parent_metrics = _metrics(con, params)
            method = pc.binary_join_element_wise(parent_metrics.column("method"), PARENT_SUFFIX, "")
            metrics.append(parent_metrics.set_column(parent_metrics.schema.get_field_index("method"), "method",
                                                     method))
        return {"agreement_metrics": pa.concat_tables(metrics, promote_options="permissive"), **tables}


def _use_level(con: duckdb.DuckDBPyConnection, confusion_paths: list[str], calibration_paths: list[str],
               level: str) -> None:
    """The partitions' counts of one level as the relations ``confusion`` and ``calibration`` (several rows per
    cell, one per partition) that the metrics' SQL adds up."""
    for name, paths in (("confusion", confusion_paths), ("calibration", calibration_paths)):
        con.read_parquet(paths).filter(f"level = '{level}'").project("* EXCLUDE (level)").create_view(
            name, replace=True)


def _metrics(con: duckdb.DuckDBPyConnection, params: dict[str, str]) -> pa.Table:
    """agreement_metrics rows from the registered sums."""
    return pa.concat_tables([
        con.sql(statement("metrics_agreement"), params=params).to_arrow_table(),
        con.sql(statement("metrics_ece"), params=params).to_arrow_table(),
    ], promote_options="permissive")


@task(name="agreement-metrics", **IO_TASK)
def compute_metrics(
    confusion_paths: list[str], calibration_paths: list[str], staging: Staging, run_id: str,
    parent_level: bool = False,
) -> dict[str, str]:
    """Stage the run's agreement_metrics, confusion_counts and calibration_bins rows."""
    tables = agreement_metrics(confusion_paths, calibration_paths, run_id, parent_level)
    return {name: write_parquet(staging.path(name, "part-00000.parquet"), table) for name, table in tables.items()}
