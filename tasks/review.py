"""Review of the catalog's current labels: the ranked annotation_issues of a run (sql/annotation_issues.sql)."""

from __future__ import annotations

import duckdb
from prefect import task

from tasks.policy import IO_TASK
from tasks.sql import statement
from tasks.staging import Staging


@task(name="annotation-issues", **IO_TASK)
def stage_annotation_issues(label_paths: list[str], staging: Staging, run_id: str) -> str:
    """Rank the items whose gold label the run's evidence speaks against; return the staged Parquet path.

    One DuckDB query over the staged labels, streamed to Parquet: it spills
    to disk past its memory limit, so a catalog of any size fits.
    """
    path = staging.path("annotation_issues", "part-00000.parquet")
    with duckdb.connect() as con:
        con.execute("SET memory_limit = '1GB'")
        con.read_parquet(label_paths).create_view("labels")
        con.sql(statement("annotation_issues"), params={"run_id": run_id}).write_parquet(str(path))
    return str(path)
