"""Review of the catalog's current labels: the ranked annotation_issues of a run.

The label pass stages each item's verdict (pairwise_core.review) beside its
labels; here the per-label spread is a small aggregate and the final order
one sort that DuckDB spills to disk past its memory limit. Rows are numbered
while they stream out.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from tasks.policy import IO_TASK
from tasks.store import DUCKDB_MEMORY
from tasks.sql import statement
from tasks.staging import Staging

_BATCH_ROWS = 65_536


def rank_annotation_issues(review_paths: list[str], workdir: Path, run_id: str) -> list[str]:
    """Write the run's annotation_issues rows, ranked, to ``workdir``; return the file (none if no issue)."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "annotation_issues.parquet"
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        con.execute("SET temp_directory = ?", [str(workdir / "spill")])
        con.read_parquet(review_paths).create_view("review_items")
        con.register("spread", con.sql(statement("review_class_spread")).to_arrow_table())
        reader = con.execute(statement("annotation_issues"), {"run_id": run_id}).to_arrow_reader(_BATCH_ROWS)
        writer, rank = None, 0
        for batch in reader:
            ranks = pa.array(np.arange(rank + 1, rank + 1 + batch.num_rows, dtype=np.int32))
            table = pa.Table.from_batches([batch]).add_column(1, "rank", ranks)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            rank += batch.num_rows
    if writer is None:
        return []
    writer.close()
    return [str(out)]


@task(name="annotation-issues", **IO_TASK)
def stage_annotation_issues(review_paths: list[str], staging: Staging, run_id: str) -> list[str]:
    """Rank the items whose gold label the run's evidence speaks against; return the staged Parquet file."""
    return rank_annotation_issues(review_paths, staging.path("review"), run_id)
