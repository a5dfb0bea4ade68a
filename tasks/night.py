"""An incremental night's plan: which items to label, found from the items' ids (and versions) alone.

New and deleted items come from comparing the source's ids with the catalog's state (`catalog_items`):
no embedding is decoded for that. Changed items come from the --changed-column values when the run has
one, and then only the partitions holding new or changed items are read. Without it, every partition is
read and each item's fingerprint (tasks/fingerprint.py) is compared with the one recorded when it was
labelled: only items whose embeddings changed are labelled again.

Each partition to read gets a staged selection: the ids to label (``listed``), or the ids to skip while
their fingerprint is the one given (hash mode). With a changed column, an item without a version (a run
without the column labelled it, or its value in the column is null) is listed with its fingerprint: it is
labelled only if that changed, and the commit records its version either way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from tasks.policy import IO_TASK
from tasks.sources import Partition, Plan, read_partition
from tasks.sql import statement
from tasks.staging import Staging, staged_writer, write_parquet
from tasks.store import reader

SELECTION_SCHEMA = pa.schema([("item_id", pa.string()), ("fingerprint", pa.uint64())])


@dataclass(frozen=True)
class Selection:
    """Which rows of a partition a label task labels."""

    path: str  # staged Parquet of SELECTION_SCHEMA
    # True: the ids listed, those with a fingerprint only if theirs changed; False: all but the listed ids whose
    # fingerprint is unchanged
    listed: bool

    def chooser(self) -> Callable[[pa.Array, np.ndarray], np.ndarray]:
        """The selection read once: (a batch's ids, their fingerprints) -> (n,) bool, the rows to label."""
        table = pq.read_table(self.path)
        known_ids, recorded = table.column("item_id"), table.column("fingerprint")
        known, unknown = recorded.fill_null(0).to_numpy(), recorded.is_null().to_numpy()

        def rows(ids: pa.Array, fingerprints: np.ndarray) -> np.ndarray:
            at = pc.index_in(ids, value_set=known_ids).fill_null(-1).to_numpy()
            changed = fingerprints != known[np.maximum(at, 0)]
            if self.listed:
                return (at >= 0) & (unknown[np.maximum(at, 0)] | changed)
            return (at < 0) | changed

        return rows


@dataclass(frozen=True)
class Night:
    """What an incremental night reads and what it found before reading any embedding."""

    partitions: tuple[Partition, ...]  # to read
    selections: dict[int, Selection]  # by partition index; a partition without one: label every row
    deleted: str  # staged Parquet of the live items gone from the source (item_id)
    source: str  # staged Parquet of the source's ids and --changed-column values (item_id, version, part)
    n_source: int
    n_new: int
    n_deleted: int
    n_changed: int | None  # with a --changed-column, the items whose value changed; else None
    # with a --changed-column: the items without a version (a run without one labelled them, or a null), checked
    # by their fingerprint; those that changed are labelled, and counted as changed
    n_unversioned: int | None
    files: str | None  # staged Parquet of the source files' signatures, to record at commit (hash mode)

    def details(self, n_labelled: int) -> dict[str, int]:
        """For runs.details: the counts, once the night labelled ``n_labelled`` items."""
        changed = n_labelled - self.n_new
        return {"source": self.n_source, "new": self.n_new, "changed": changed, "deleted": self.n_deleted,
                "unversioned": self.n_unversioned or 0, "labelled": n_labelled,
                "carried_over": self.n_source - n_labelled,
                "partitions_read": len(self.partitions)}


# Rows of the night's comparison read back at a time: with the staged source ids, they keep the plan's memory
# bounded (DuckDB's own is capped) however large the catalog
STATE_BATCH_ROWS = 65_536
SOURCE_SCHEMA = pa.schema([("item_id", pa.string()), ("version", pa.string()), ("part", pa.int32())])


@task(name="plan-night", **IO_TASK)
def plan_night(plan: Plan, db: str, staging: Staging, run_id: str, signatures: pa.Table | None) -> Night:
    """Compare the source's ids (and --changed-column values) with the catalog's state; stage the selections.

    ``signatures``: the source files' (``file_signatures``; None for a DuckDB table): without a changed column,
    a partition is not read when its file is as it was when its items were fingerprinted and all of them are
    known by the catalog with a fingerprint. The source's ids are staged, compared in DuckDB, and the result
    read back in batches, in partition order, each partition's selection written as it is complete: nothing
    holds the whole catalog's ids (1M items: 158 MB more than at 100k when it did).
    """
    source = _stage_source_ids(plan, staging.path("night", "source.parquet"))
    listed = plan.changed_column is not None
    known = np.zeros(len(plan.partitions), np.int64)  # per partition: the rows picked
    counts = {"source": 0, "new": 0, "changed": 0, "unversioned": 0}
    selections: dict[int, Selection] = {}
    open_part: tuple[int, pq.ParquetWriter] | None = None
    with reader(db) as con:
        recorded = {tuple(row.values()) for row in con.sql(statement("night_files")).to_arrow_table().to_pylist()}
        deleted_path = staging.path("deleted", "part-00000.parquet")
        n_deleted = _write_batches(con.sql(statement("night_deleted"), params={"source": source})
                                   .to_arrow_reader(STATE_BATCH_ROWS), deleted_path)
        state = con.sql(statement("night_source_state"), params={"run_id": run_id, "source": source})
        for batch in state.to_arrow_reader(STATE_BATCH_ROWS):
            new = batch.column("new").to_numpy(zero_copy_only=False)
            relabel = batch.column("relabel").fill_null(False).to_numpy(zero_copy_only=False)
            if listed:  # the new, the changed and the re-run's own; those without a version, checked
                unversioned = batch.column("unversioned").to_numpy(zero_copy_only=False) & ~relabel
                pick = new | batch.column("version_changed").to_numpy(zero_copy_only=False) | relabel | unversioned
                counts["changed"] += int((pick & ~new & ~unversioned).sum())
                counts["unversioned"] += int(unversioned.sum())
                fingerprint = pc.if_else(pa.array(unversioned), batch.column("fingerprint"),
                                         pa.nulls(batch.num_rows, pa.uint64()))
                batch = batch.set_column(batch.schema.get_field_index("fingerprint"), "fingerprint", fingerprint)
            else:  # skip the items whose recorded fingerprint still matches
                pick = ~new & ~relabel & batch.column("fingerprint").is_valid().to_numpy(zero_copy_only=False)
            counts["source"] += batch.num_rows
            counts["new"] += int(new.sum())
            parts = batch.column("part").to_numpy()
            known += np.bincount(parts[pick], minlength=len(plan.partitions))
            for index in np.unique(parts[pick]):  # in order: the rows come sorted by partition
                if open_part is None or open_part[0] != index:
                    _close(open_part)
                    path = staging.path("selection", f"part-{index:05d}.parquet")
                    open_part = (int(index), staged_writer(path, SELECTION_SCHEMA))
                    selections[int(index)] = Selection(str(path), listed)
                rows = pa.array(np.flatnonzero(pick & (parts == index)))
                open_part[1].write_batch(batch.select(["item_id", "fingerprint"]).take(rows).cast(SELECTION_SCHEMA))
    _close(open_part)
    by_partition = {p.index: p for p in plan.partitions}
    if listed:
        read = tuple(by_partition[i] for i in sorted(selections))
    else:
        unchanged = {row["path"] for row in (signatures.to_pylist() if signatures is not None else [])
                     if (row["path"], row["size"], row["mtime_ns"]) in recorded}
        read = tuple(p for p in plan.partitions if p.path not in unchanged or known[p.index] < p.n_rows)
    files = None if listed or signatures is None else write_parquet(staging.path("files", "part-00000.parquet"),
                                                                    signatures)
    return Night(
        partitions=read, selections=selections, deleted=str(deleted_path), source=source, n_source=counts["source"],
        n_new=counts["new"], n_deleted=n_deleted, n_changed=counts["changed"] if listed else None,
        n_unversioned=counts["unversioned"] if listed else None, files=files,
    )


def _stage_source_ids(plan: Plan, path: Path) -> str:
    """item_id, version (the --changed-column value as text, or null) and partition of every source item,
    staged to Parquet batch by batch."""
    columns = ["item_id", *([plan.changed_column] if plan.changed_column else [])]
    with staged_writer(path, SOURCE_SCHEMA) as writer:
        for partition in plan.partitions:
            for batch in read_partition(partition, columns):
                n = batch.num_rows
                version = batch.column(plan.changed_column).cast(pa.string()) if plan.changed_column \
                    else pa.nulls(n, pa.string())
                writer.write_table(pa.table({"item_id": batch.column("item_id").cast(pa.string()), "version": version,
                                             "part": pa.array(np.full(n, partition.index, np.int32))},
                                            schema=SOURCE_SCHEMA))
    return str(path)


def _write_batches(batches: pa.RecordBatchReader, path: Path) -> int:
    """A query's result streamed to Parquet; its row count."""
    rows = 0
    with staged_writer(path, batches.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def _close(open_part: tuple[int, pq.ParquetWriter] | None) -> None:
    if open_part is not None:
        open_part[1].close()
