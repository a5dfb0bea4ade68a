"""Removing old runs: every run adds its rows to the file for good (a full run of a million items with two
modalities: two million item_labels rows, a million joint_labels and label_changes rows) and its HTML report
beside it, so a nightly cycle's file grows without end.

A run stays while anything still reads it:
- the newest ``keep`` succeeded runs, and every run since the oldest of them (failed ones too: recent history);
- a run that still labels live items (``catalog_items.run_id``): current_labels joins its item_labels rows;
- a run that fitted a stored model: labelling with the model reads the run's params (sql/model_fit_params.sql),
  so it goes after its model (``pairwise models --keep``);
- a run still marked running: it is abandoned (the removal holds the run lock), and the next run records it so.
The others go whole: every row of every table in one transaction under the run lock, then their HTML reports.
DuckDB reuses the freed blocks for later rows: the file stops growing rather than shrinking.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import store
from tasks.folders import plain_name, report_path
from tasks.run_log import count
from tasks.sql import OUTPUT_TABLES, statement

Row = dict[str, Any]
# a run's rows, table by table (delete_run_<table>.sql), then its attempts and its row
RUN_TABLES = (*OUTPUT_TABLES, "label_changes")


@dataclass(frozen=True)
class RunRemoval:
    """What a removal did (or, dry, would do): the runs removed, those past ``keep`` that stay and why, and how
    many runs are left."""

    removed: list[Row]
    stayed: list[tuple[Row, str]]
    left: int


def plan_run_removal(rows: Sequence[Row], keep: int) -> RunRemoval:
    """Which runs (``rows``: report_runs', newest first) to remove: every run older than the newest ``keep``
    succeeded ones, but those something still reads."""
    if keep < 1:
        raise ValueError(f"--keep must be at least 1 (the latest succeeded run always stays), got {keep}")
    succeeded = [at for at, row in enumerate(rows) if row["status"] == "succeeded"]
    past = rows[succeeded[keep - 1] + 1:] if len(succeeded) > keep else []
    removed, stayed = [], []
    for row in past:
        why = _still_read(row)
        if why:
            stayed.append((row, why))
        else:
            removed.append(row)
    return RunRemoval(removed, stayed, len(rows) - len(removed))


def _still_read(row: Row) -> str | None:
    if row["n_live"]:
        return f"it still labels {count(row['n_live'], 'live item')}"
    if row["fitted"] is not None:
        return f"it fitted stored model {row['fitted']}"
    if row["status"] == "running":
        return "it is still marked running (abandoned: the next run records it as failed)"
    return None


def remove_old_runs(db: str | Path, keep: int, dry_run: bool = False) -> RunRemoval:
    """Remove the runs of ``db`` that ``plan_run_removal`` chooses (``pairwise runs --keep``); with ``dry_run``
    only say which. Takes the run lock (RunLocked if a run holds it)."""
    with store.reader(db) as con:  # bad input is refused before the lock, and before a write upgrades the file
        planned = plan_run_removal(_rows(con), keep)
    if dry_run:
        return planned
    store.check_writable(db)
    with store.run_lock(db):
        return remove_runs_under_lock(db, keep)


def remove_runs_under_lock(db: str | Path, keep: int) -> RunRemoval:
    """``remove_old_runs`` for a caller that holds the run lock (a run's ``keep_runs``): the runs are chosen in
    the connection that deletes them, their rows go in one transaction, then their reports."""
    with store.connect(db) as con:
        removal = plan_run_removal(_rows(con), keep)
        if removal.removed:
            store.delete_runs(con, [row["run_id"] for row in removal.removed], RUN_TABLES)
    for row in removal.removed:
        if plain_name(row["run_id"]):
            with suppress(FileNotFoundError):
                report_path(db, row["run_id"]).unlink()
    return removal


def _rows(con: Any) -> list[Row]:
    return con.sql(statement("report_runs")).to_arrow_table().to_pylist()
