"""Agreement and gold metrics, in DuckDB SQL over the staged labels (sql/metrics_*.sql).

Confusion counts are taken partition by partition and added up, so memory
stays bounded by a partition however large the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task

from tasks.policy import IO_TASK
from tasks.store import DUCKDB_MEMORY
from tasks.sql import statement
from tasks.staging import Staging, write_parquet

PARENT_SUFFIX = "_parent"  # agreement_metrics.method at the parent level: base_parent, pairwise_parent, refined_parent


def agreement_metrics(label_paths: list[str], joint_paths: list[str], run_id: str,
                      parents: Mapping[str, str] | None = None) -> dict[str, pa.Table]:
    """The agreement_metrics, confusion_counts and calibration_bins rows of a run, from its staged labels.

    With ``parents`` (class name -> parent name) the agreement_metrics rows are repeated at the parent level
    (sql/metrics_parent_level.sql): the same SQL over the labels mapped to parents. Their confusion counts
    and calibration sums are not kept: those tables describe the leaf classes.
    """
    params = {"run_id": run_id}
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        _register_sums(con, label_paths, joint_paths, parent_level=False)
        metrics = [_metrics(con, params)]
        tables = {
            "confusion_counts": con.execute(statement("metrics_confusion_total"), params).to_arrow_table(),
            "calibration_bins": con.execute(statement("metrics_calibration_total"), params).to_arrow_table(),
        }
        if parents is not None:
            con.register("parents", pa.table({"class_name": pa.array(list(parents), pa.string()),
                                              "parent": pa.array(list(parents.values()), pa.string())}))
            _register_sums(con, label_paths, joint_paths, parent_level=True)
            parent_metrics = _metrics(con, params)
            method = pc.binary_join_element_wise(parent_metrics.column("method"), PARENT_SUFFIX, "")
            metrics.append(parent_metrics.set_column(parent_metrics.schema.get_field_index("method"), "method",
                                                     method))
        return {"agreement_metrics": pa.concat_tables(metrics, promote_options="permissive"), **tables}


def _register_sums(con: duckdb.DuckDBPyConnection, label_paths: list[str], joint_paths: list[str], *,
                   parent_level: bool) -> None:
    """Register the partitions' confusion counts and calibration sums, added up later, as ``confusion`` and
    ``calibration``: of the leaf labels, or of their parents."""
    counts, bins = [], []
    prefix = "leaf_" if parent_level else ""
    for labels, joint in zip(label_paths, joint_paths, strict=True):
        con.read_parquet(labels).create_view(f"{prefix}labels", replace=True)
        con.read_parquet(joint).create_view(f"{prefix}joint", replace=True)
        if parent_level:
            con.execute(statement("metrics_parent_level"))
        counts += [con.execute(statement(name)).to_arrow_table()
                   for name in ("metrics_confusion", "metrics_confusion_joint")]
        bins.append(con.execute(statement("metrics_calibration")).to_arrow_table())
    con.register("confusion", pa.concat_tables(counts, promote_options="permissive"))
    con.register("calibration", pa.concat_tables(bins, promote_options="permissive"))


def _metrics(con: duckdb.DuckDBPyConnection, params: dict[str, str]) -> pa.Table:
    """agreement_metrics rows from the registered sums."""
    return pa.concat_tables([
        con.execute(statement("metrics_agreement"), params).to_arrow_table(),
        con.execute(statement("metrics_ece"), params).to_arrow_table(),
    ], promote_options="permissive")


@task(name="agreement-metrics", **IO_TASK)
def compute_metrics(
    label_paths: list[str], joint_paths: list[str], staging: Staging, run_id: str,
    parents: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Stage the run's agreement_metrics, confusion_counts and calibration_bins rows (item ids are unique:
    validation checked them)."""
    tables = agreement_metrics(label_paths, joint_paths, run_id, parents)
    return {name: write_parquet(staging.path(name, "part-00000.parquet"), table) for name, table in tables.items()}
