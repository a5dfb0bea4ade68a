"""Removing stored models a catalog no longer needs: every full run stores one (115 MB at 500 classes, with the
graph 650 MB more per million items), and a nightly cycle with weekly refits keeps 52 a year.

A model stays while anything still reads it:
- the latest, which ``--model latest`` (every incremental night) labels with;
- any model that still labels live catalog items (``catalog_items.model_id``): its row gives those labels'
  lineage, and a refit's ``--refit-stability`` compares its classes (``class_hash``) before keeping them.
The others go whole, row and folder: the row first, in one transaction under the run lock, then the folder.
A crash between the two leaves a folder without a row, which the next run deletes as it deletes what a failed
commit left (``tasks.runs.start_run``): no model is ever listed without its files, or half removed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import models, store
from tasks.folders import plain_name
from tasks.sources import first_few
from tasks.sql import statement

Row = dict[str, Any]


@dataclass(frozen=True)
class Removal:
    """What a removal did (or, dry, would do): the models removed, those past ``keep`` that stay because they
    still label live items, and the models left, with each removed model's bytes on disk; ``stuck``: the
    folders of removed models that could not be deleted (their rows are gone: the next removal or run tries
    again)."""

    removed: list[Row]
    still_live: list[Row]
    left: list[Row]
    sizes: dict[str, int]
    stuck: tuple[Path, ...] = ()

    def freed(self) -> int:
        """The bytes of the removed models' folders that are gone."""
        return sum(self.sizes.values()) - sum(folder_bytes(folder) for folder in self.stuck)


def plan_removal(rows: Sequence[Row], asked: Sequence[str] | None, keep: int | None, db: str | Path) -> Removal:
    """Which of the stored models (``rows``: report_models', newest first, with ``n_live``) to remove: those
    ``asked`` for by id, all or none (ValueError, one line, if one is unknown, the latest or still labels live
    items), or every model past the newest ``keep`` that labels no live item."""
    latest = rows[0]["model_id"] if rows else None
    if asked is not None:
        by_id = {row["model_id"]: row for row in rows}
        unknown = [model_id for model_id in asked if model_id not in by_id]
        if unknown:
            raise ValueError(f"no such stored model in {db}: {first_few(unknown)} (`pairwise models --db {db}` "
                             "lists them)")
        if latest in asked:
            raise ValueError(f"model {latest} is the latest: `--model latest` labels with it, so it stays")
        chosen = [by_id[model_id] for model_id in dict.fromkeys(asked)]
        live = [row for row in chosen if row["n_live"]]
        if live:
            raise ValueError(f"model {live[0]['model_id']} still labels {live[0]['n_live']:,} live items "
                             "(catalog_labels.model_id), so it stays until runs label them with another model; "
                             "nothing was removed")
        return Removal(chosen, [], [row for row in rows if row not in chosen], {})
    if keep is None or keep < 1:
        raise ValueError(f"--keep must be at least 1 (the latest model always stays), got {keep}")
    past = list(rows[keep:])
    removed = [row for row in past if not row["n_live"]]
    return Removal(removed, [row for row in past if row["n_live"]], [row for row in rows if row not in removed], {})


def folder_bytes(folder: Path) -> int:
    """The bytes of the files under ``folder`` (0 if it is gone, or a link: the removal deletes the link, not
    what it names), links not followed; a file gone meanwhile counts nothing (a dry run takes no lock)."""
    if folder.is_symlink():
        return 0
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with suppress(FileNotFoundError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def remove_stored_models(db: str | Path, asked: Sequence[str] | None = None, keep: int | None = None,
                         dry_run: bool = False) -> Removal:
    """Remove stored models of ``db`` as ``plan_removal`` chooses (``pairwise models``); with ``dry_run`` only
    say which. Takes the run lock (RunLocked if a run holds it): no run reads or stores a model meanwhile."""
    models.check_models(db)
    with store.reader(db) as con:  # bad input is refused before the lock, and before a write upgrades the file
        planned = plan_removal(_rows(con), asked, keep, db)
    if dry_run:
        return _sized(planned, db)
    store.check_writable(db)
    with store.run_lock(db):
        return remove_under_lock(db, asked, keep)


def remove_under_lock(db: str | Path, asked: Sequence[str] | None = None, keep: int | None = None) -> Removal:
    """``remove_stored_models`` for a caller that holds the run lock (a run's ``keep_models``): the rows go in
    one transaction, chosen inside the connection that deletes them, then every folder of the store without a
    row."""
    with store.connect(db) as con:
        removal = _sized(plan_removal(_rows(con), asked, keep, db), db)
        if removal.removed:
            store.delete_models(con, [row["model_id"] for row in removal.removed])
        kept = {row["model_id"] for row in _rows(con)}
    models.remove_models(db, keep=kept)  # deletes what it can and says nothing of the rest: looked for below
    folders = [store.stored_model_folder(db, row["model_id"]) for row in removal.removed
               if plain_name(row["model_id"])]
    return dataclasses.replace(removal, stuck=tuple(folder for folder in folders if os.path.lexists(folder)))


def _rows(con: Any) -> list[Row]:
    return con.sql(statement("report_models")).to_arrow_table().to_pylist()


def _sized(removal: Removal, db: str | Path) -> Removal:
    """Each removed model's bytes; 0 for an id that is no name of a folder in the store (a row edited to
    ``../..``: the walk went through whatever it named, the whole file system)."""
    sizes = {row["model_id"]: folder_bytes(store.stored_model_folder(db, row["model_id"]))
             if plain_name(row["model_id"]) else 0 for row in removal.removed}
    return dataclasses.replace(removal, sizes=sizes)
