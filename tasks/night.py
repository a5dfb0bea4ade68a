"""An incremental night's plan: which items to label, found from the items' ids (and versions) alone.

New and deleted items come from comparing the source's ids with the catalog's state (`catalog_items`):
no embedding is decoded for that. Changed items come from the --changed-column values when the run has
one, and then only the partitions holding new or changed items are read. Without it, every partition is
read and each item's fingerprint (tasks/fingerprint.py) is compared with the one recorded when it was
labelled: only items whose embeddings changed are labelled again.

Each partition to read gets a staged selection: the ids to label (``listed``), or the ids to skip while
their fingerprint is the one given (hash mode).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from tasks.policy import IO_TASK
from tasks.sources import Partition, Plan, read_partition
from tasks.sql import statement
from tasks.staging import Staging, write_parquet
from tasks.store import reader

SELECTION_SCHEMA = pa.schema([("item_id", pa.string()), ("fingerprint", pa.uint64())])


@dataclass(frozen=True)
class Selection:
    """Which rows of a partition a label task labels."""

    path: str  # staged Parquet of SELECTION_SCHEMA
    listed: bool  # True: exactly the ids listed; False: all but the listed ids whose fingerprint is unchanged

    def chooser(self) -> Callable[[pa.Array, np.ndarray], np.ndarray]:
        """The selection read once: (a batch's ids, their fingerprints) -> (n,) bool, the rows to label."""
        table = pq.read_table(self.path)
        known_ids, known = table.column("item_id"), table.column("fingerprint").to_numpy()

        def rows(ids: pa.Array, fingerprints: np.ndarray) -> np.ndarray:
            at = pc.index_in(ids, value_set=known_ids).fill_null(-1).to_numpy()
            if self.listed:
                return at >= 0
            return (at < 0) | (fingerprints != known[np.maximum(at, 0)])

        return rows


@dataclass(frozen=True)
class Night:
    """What an incremental night reads and what it found before reading any embedding."""

    partitions: tuple[Partition, ...]  # to read
    selections: dict[int, Selection]  # by partition index; a partition without one: label every row
    deleted: str  # staged Parquet of the live items gone from the source (item_id)
    n_source: int
    n_new: int
    n_deleted: int
    n_changed: int | None  # known here with a --changed-column; else counted as the partitions are read
    files: str | None  # staged Parquet of the source files' signatures, to record at commit (hash mode)

    def details(self, n_labelled: int) -> dict[str, int]:
        """For runs.details: the counts, once the night labelled ``n_labelled`` items."""
        changed = n_labelled - self.n_new if self.n_changed is None else self.n_changed
        return {"source": self.n_source, "new": self.n_new, "changed": changed, "deleted": self.n_deleted,
                "labelled": n_labelled, "carried_over": self.n_source - n_labelled,
                "partitions_read": len(self.partitions)}


@task(name="plan-night", **IO_TASK)
def plan_night(plan: Plan, db: str, staging: Staging, run_id: str, signatures: pa.Table | None) -> Night:
    """Compare the source's ids (and --changed-column values) with the catalog's state; stage the selections.

    ``signatures``: the source files' (``file_signatures``; None for a DuckDB table): without a changed column,
    a partition is not read when its file is as it was when its items were fingerprinted and all of them are
    known by the catalog with a fingerprint.
    """
    source = _source_ids(plan)
    with reader(db) as con:
        con.register("source", source)
        state = con.execute(statement("night_source_state"), {"run_id": run_id}).to_arrow_table()
        deleted = con.execute(statement("night_deleted")).to_arrow_table()
        recorded = {tuple(row.values()) for row in con.execute(statement("night_files")).to_arrow_table().to_pylist()}
        con.unregister("source")
    listed = plan.changed_column is not None
    new = state.column("new").to_numpy(zero_copy_only=False)
    relabel = state.column("relabel").fill_null(False).to_numpy(zero_copy_only=False)
    if listed:  # label the new, the changed and the re-run's own
        pick = new | state.column("version_changed").to_numpy(zero_copy_only=False) | relabel
        n_changed = int((pick & ~new).sum())
    else:  # skip the items whose recorded fingerprint still matches
        pick = ~new & ~relabel & state.column("fingerprint").is_valid().to_numpy(zero_copy_only=False)
        n_changed = None
    parts = state.column("part").to_numpy()
    by_partition = {p.index: p for p in plan.partitions}
    selections: dict[int, Selection] = {}
    for index in np.unique(parts[pick]) if pick.any() else []:
        rows = np.flatnonzero(pick & (parts == index))
        table = state.take(pa.array(rows)).select(["item_id", "fingerprint"]).cast(SELECTION_SCHEMA)
        selections[int(index)] = Selection(write_parquet(staging.path("selection", f"part-{index:05d}.parquet"),
                                                         table), listed)
    if listed:
        read = tuple(by_partition[i] for i in sorted(selections))
    else:
        unchanged = {row["path"] for row in (signatures.to_pylist() if signatures is not None else [])
                     if (row["path"], row["size"], row["mtime_ns"]) in recorded}
        known = np.bincount(parts[pick], minlength=len(plan.partitions))
        read = tuple(p for p in plan.partitions if p.path not in unchanged or known[p.index] < p.n_rows)
    files = None if listed or signatures is None else write_parquet(staging.path("files", "part-00000.parquet"),
                                                                    signatures)
    return Night(
        partitions=read, selections=selections,
        deleted=write_parquet(staging.path("deleted", "part-00000.parquet"), deleted.select(["item_id"])),
        n_source=source.num_rows, n_new=int(new.sum()), n_deleted=deleted.num_rows, n_changed=n_changed,
        files=files,
    )


def _source_ids(plan: Plan) -> pa.Table:
    """item_id, version (the --changed-column value as text, or null) and partition of every source item."""
    columns = ["item_id", *([plan.changed_column] if plan.changed_column else [])]
    parts = []
    for partition in plan.partitions:
        for batch in read_partition(partition, columns):
            n = batch.num_rows
            version = batch.column(plan.changed_column).cast(pa.string()) if plan.changed_column else pa.nulls(n, pa.string())
            parts.append(pa.table({"item_id": batch.column("item_id").cast(pa.string()), "version": version,
                                   "part": pa.array(np.full(n, partition.index, np.int32))}))
    return pa.concat_tables(parts)
