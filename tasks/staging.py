"""A run's scratch space: files that tasks hand to each other by path, never visible to readers.

Everything lives under `<db>.staging/<run_id>/` and is removed when the run
ends, whether it succeeded or failed.

Later tasks load what earlier ones staged (arrays, never pickles: tasks/models.py)
and the fitted model is moved from here into the model store, so the folder is
guarded: `<db>.staging` and each run's folder are private to the user running
the flow (0700), a staging folder that is a symbolic link or belongs to another
user is refused before anything is written or deleted, and deletions go
through the folder opened without following links, so they never reach a
link's target. The model store (`<db>.models`) is guarded by the same helpers.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core import PairStats, PairwiseClassifier, embeddings
from pairwise_core.classifier import default_candidates
from tasks.folders import PRIVATE, beside, check_name_room, check_private, clear, create_private, opened, remove_entry
from tasks.sources import EMBEDDING_SUFFIX, Plan

T = TypeVar("T")


class RunEnded(RuntimeError):
    """A task of a run that ended while it ran (Ctrl-C, SIGTERM: the task threads run on): its staged files
    are gone."""


class StagingGone(RuntimeError):
    """A run's staging folder disappeared while the run was using it: something else removed or moved it."""


def ends_with_its_run(task_fn: Callable[..., T]) -> Callable[..., T]:
    """A partition task's failure, once its run has ended and removed the run's folder, says so (RunEnded),
    not what the vanishing files made of it ("model.json is missing; refit with a full run")."""
    signature = inspect.signature(task_fn)

    @functools.wraps(task_fn)
    def run(*args: Any, **kwargs: Any) -> T:
        staging = signature.bind(*args, **kwargs).arguments["staging"]
        try:
            return task_fn(*args, **kwargs)
        except Exception as error:
            if staging.root.is_dir():
                raise
            raise RunEnded(f"its run ended and removed {staging.root} before the task finished") from error

    return run


def staging_folder(db: str) -> Path:
    return beside(db, ".staging")


def check_staging(db: str) -> None:
    """Refuse (ValueError: bad input, one line) a staging folder that is a symbolic link, not a folder, or
    another user's: files others can swap would be read by the run. A missing one is fine."""
    check_name_room(db)
    check_private(staging_folder(db), "the staging folder")


def prepare_staging(db: str) -> None:
    """Create the staging folder private (0700), or check it and make it private; then empty it. Called under
    the run lock, when no other run can be running: what it holds is scratch space of runs that ended."""
    create_private(staging_folder(db))
    clear(staging_folder(db), "the staging folder")


@dataclass(frozen=True)
class Staging:
    """Paths of one run's staged files."""

    root: Path

    @classmethod
    def for_run(cls, db: str, run_id: str) -> Staging:
        return cls(staging_folder(db) / run_id)

    @classmethod
    def create(cls, db: str, run_id: str) -> Staging:
        """The run's folder, made private inside the staging folder that ``prepare_staging`` made."""
        staging = cls.for_run(db, run_id)
        staging.root.mkdir(PRIVATE, exist_ok=True)
        return staging

    def path(self, *parts: str) -> Path:
        """A staged file's path, its folder created inside the run's. Never the run's folder itself: a task
        still running after the run ended and removed it (Ctrl-C) fails, instead of making it again."""
        path = self.root.joinpath(*parts)
        if path.parent != self.root:
            path.parent.mkdir(exist_ok=True)
        return path

    @property
    def model(self) -> Path:
        """The folder the fitted parts are written to (private): sealed after the fits, loaded by the label
        tasks, and moved whole into the model store when the run commits."""
        folder = self.path("model")
        folder.mkdir(PRIVATE, exist_ok=True)
        return folder

    def part(self, kind: str, index: int) -> Path:
        return self.path(kind, f"part-{index:05d}.parquet")

    def gone(self) -> StagingGone | None:
        """Why the running run failed, if its folder is gone: the run removes it only as it ends, so another
        process did (an operator, a cleanup job), and what a task made of the missing files (RunEnded, a
        FileNotFoundError) would blame the run."""
        if self.root.is_dir():
            return None
        what, folder = ("the run's staging folder", self.root) if self.root.parent.is_dir() else \
            ("the staging folder", self.root.parent)
        return StagingGone(f"{what} {folder} disappeared while the run was using it: another process removed or "
                           "moved it")

    def remove(self) -> None:
        """Delete the run's folder, and the staging folder once empty. Nothing is deleted when the staging
        folder is no longer ours (swapped for a link or another user's folder mid-run): the next run refuses it.
        The folder is first renamed away, at once: a task still starting on the run's threads (a run cancelled
        from the UI) finds it whole or gone (RunEnded), never half deleted (its model folder missing: 'refit
        with a full run'). A rename left by a process killed amid the deletion goes with the next run's
        ``prepare_staging``."""
        try:
            with opened(self.root.parent) as folder:
                removing = f".{self.root.name}.removing"
                with suppress(FileNotFoundError):
                    os.rename(self.root.name, removing, src_dir_fd=folder, dst_dir_fd=folder)
                remove_entry(folder, removing)
                empty = not os.listdir(folder)
        except (FileNotFoundError, ValueError):
            return
        if empty:
            with suppress(OSError):  # a run that started meanwhile
                os.rmdir(self.root.parent)


def classifiers(classes_path: str, plan: Plan, core_params: dict[str, Any]) -> dict[str, PairwiseClassifier]:
    """One unfitted classifier per modality, from the staged class table."""
    table = pq.read_table(classes_path)
    if core_params["candidates"] is None:  # not told: prune at many classes only
        core_params = core_params | {"candidates": default_candidates(table.num_rows)}
    return {
        m: PairwiseClassifier(embeddings(table, f"{m}{EMBEDDING_SUFFIX}"), **core_params) for m in plan.modalities
    }


def save_arrays(folder: Path, arrays: Mapping[str, np.ndarray]) -> str:
    """Arrays staged as a folder of .npy files, one an array (no pickles). ``StagedArrays`` reads one whole
    or maps it, with no zip member to read through: from .npz parts, loading the graph step's arrays of 1M
    items took 2.4 s (a zip read, its CRC and a copy more an array)."""
    folder.mkdir(exist_ok=True)
    for name, value in arrays.items():
        np.save(folder / _array_file(name), np.asarray(value), allow_pickle=False)
    return str(folder)


class StagedArrays:
    """A folder ``save_arrays`` wrote: ``arrays[name]`` reads one array, ``arrays.mapped(name)`` maps it
    (read-only), and ``name in arrays`` says whether it was staged."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __contains__(self, name: str) -> bool:
        return (self.folder / _array_file(name)).is_file()

    def __getitem__(self, name: str) -> np.ndarray:
        return np.load(self.folder / _array_file(name), allow_pickle=False)

    def mapped(self, name: str) -> np.ndarray:
        return np.load(self.folder / _array_file(name), mmap_mode="r", allow_pickle=False)


def _array_file(name: str) -> str:
    return f"{name.replace('/', '.')}.npy"


def save_stats(path: Path, stats: dict[str, Any]) -> str:
    """Per modality, a dataclass of arrays (PairStats, ClassSums), as one .npz file."""
    arrays = {
        f"{modality}/{field.name}": getattr(s, field.name)
        for modality, s in stats.items()
        for field in dataclasses.fields(s)
    }
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return str(path)


def load_stats(path: str, modalities: tuple[str, ...], kind: type = PairStats) -> dict[str, Any]:
    with np.load(path) as data:
        return {m: kind(**{field.name: data[f"{m}/{field.name}"] for field in dataclasses.fields(kind)})
                for m in modalities}


@contextmanager
def replacing(target: Path) -> Iterator[Path]:
    """A path beside ``target`` to write to; renamed over ``target`` when the block succeeds, removed when it
    fails: readers see the old file or the whole new one, never half of it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def staged_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A writer of a run's staged rows, with dictionary pages for the repeated string columns alone (class
    names, modality, run id). Item ids are unique and floats rarely repeat: their dictionaries were built and
    thrown away (item_labels, 100k rows: 44 -> 26 ms). The metrics' group-bys read the class columns faster
    from dictionary pages (a 1M relabel's staged files: 0.9 s, against 1.5 s with none). No column statistics:
    staged parts are read whole, never filtered by them, and their min and max cost a third of the writing
    (item_labels, 2M rows: 0.32 -> 0.22 CPU-s)."""
    repeated = [field.name for field in schema if pa.types.is_string(field.type) and field.name != "item_id"]
    return pq.ParquetWriter(path, schema, use_dictionary=repeated, write_statistics=False)


def write_parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)
