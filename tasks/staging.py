"""A run's scratch space: files that tasks hand to each other by path, never visible to readers.

Everything lives under `<db>.staging/<run_id>/` and is removed when the run
ends, whether it succeeded or failed.

Later tasks unpickle what earlier ones staged, so the folder is trusted code:
`<db>.staging` and each run's folder are private to the user running the flow
(0700), a staging folder that is a symbolic link or belongs to another user is
refused before anything is written or deleted, and deletions go through the
folder opened without following links, so they never reach a link's target.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import stat
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core import PairStats, PairwiseClassifier, embeddings
from tasks.sources import EMBEDDING_SUFFIX, Plan

PRIVATE = 0o700  # the staging folder and the run folders: the flow's user only


def staging_folder(db: str) -> Path:
    return Path(f"{db}.staging")


def check_staging(db: str) -> None:
    """Refuse (ValueError: bad input, one line) a staging folder that is a symbolic link, not a folder, or
    another user's: files others can swap would be unpickled by the run. A missing one is fine."""
    try:
        _check_folder(staging_folder(db), os.lstat(staging_folder(db)))
    except FileNotFoundError:
        pass


def _check_folder(folder: Path, status: os.stat_result) -> None:
    if stat.S_ISLNK(status.st_mode):
        raise ValueError(f"{folder}: the staging folder is a symbolic link; refusing to use it (remove the link)")
    if not stat.S_ISDIR(status.st_mode):
        raise ValueError(f"{folder}: the staging folder is not a folder; refusing to use it")
    if status.st_uid != os.getuid():
        raise ValueError(f"{folder}: the staging folder belongs to uid {status.st_uid}, not to this user "
                         f"(uid {os.getuid()}); refusing to use it")


@contextmanager
def _opened(folder: Path) -> Iterator[int]:
    """``folder`` opened without following a link, checked as ``check_staging`` does, and made private
    (0700) if it was looser: a descriptor to list and delete relative to, which a swap of the path cannot
    redirect. FileNotFoundError if it is missing."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as error:
        if not isinstance(error, FileNotFoundError):  # a link (ELOOP) or not a folder (ENOTDIR): say which
            _check_folder(folder, os.lstat(folder))
        raise
    try:
        status = os.fstat(fd)
        _check_folder(folder, status)
        if stat.S_IMODE(status.st_mode) != PRIVATE:
            os.fchmod(fd, PRIVATE)
        yield fd
    finally:
        os.close(fd)


def _remove_entry(folder: int, name: str) -> None:
    """Delete ``name`` inside the opened ``folder``: a folder's tree (never following a link inside it:
    shutil's fd-based rmtree), or a file or link itself."""
    try:
        if stat.S_ISDIR(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
            shutil.rmtree(name, dir_fd=folder, ignore_errors=True)
        else:
            os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def prepare_staging(db: str) -> None:
    """Create the staging folder private (0700), or check it and make it private; then empty it. Called under
    the run lock, when no other run can be running: what it holds is scratch space of runs that ended."""
    with suppress(FileExistsError):
        os.mkdir(staging_folder(db), PRIVATE)
    with _opened(staging_folder(db)) as folder:
        for name in sorted(os.listdir(folder)):
            _remove_entry(folder, name)


@dataclass(frozen=True)
class Staging:
    """Paths of one run's staged files."""

    root: Path

    @classmethod
    def for_run(cls, db: str, run_id: str) -> Staging:
        return cls(staging_folder(db) / run_id)

    def path(self, *parts: str) -> Path:
        """A staged file's path, its folders created (the run's own private, inside the staging folder that
        ``prepare_staging`` made)."""
        self.root.mkdir(PRIVATE, exist_ok=True)
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def part(self, kind: str, index: int) -> Path:
        return self.path(kind, f"part-{index:05d}.parquet")

    def remove(self) -> None:
        """Delete the run's folder, and the staging folder once empty. Nothing is deleted when the staging
        folder is no longer ours (swapped for a link or another user's folder mid-run): the next run refuses it."""
        try:
            with _opened(self.root.parent) as folder:
                _remove_entry(folder, self.root.name)
                empty = not os.listdir(folder)
        except (FileNotFoundError, ValueError):
            return
        if empty:
            with suppress(OSError):  # a run that started meanwhile
                os.rmdir(self.root.parent)


def classifiers(classes_path: str, plan: Plan, core_params: dict[str, Any]) -> dict[str, PairwiseClassifier]:
    """One unfitted classifier per modality, from the staged class table."""
    table = pq.read_table(classes_path)
    return {
        m: PairwiseClassifier(embeddings(table, f"{m}{EMBEDDING_SUFFIX}"), **core_params) for m in plan.modalities
    }


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


def _open_own(path: str) -> BinaryIO:
    """A staged file opened for unpickling, refused unless this user owns it. The staging folder is
    private, but whoever can write the database's folder can rename it away and put their own in its place:
    a file they wrote there is theirs, and is never unpickled (checked on the open file, so no later swap
    counts)."""
    handle = open(path, "rb")  # noqa: SIM115 (handed to the caller, who closes it)
    owner = os.fstat(handle.fileno()).st_uid
    if owner != os.getuid():
        handle.close()
        raise PermissionError(f"{path}: staged by uid {owner}, not by this user (uid {os.getuid()}); "
                              "refusing to unpickle it")
    return handle


def save_pickle(path: Path, value: Any) -> str:
    """A fitted object the later tasks load by path (``load_pickle``, ``load_model``)."""
    with path.open("wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return str(path)


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


class _Models(dict):
    """The fitted models of a run, by modality (a dict that can be weakly referenced)."""


_loaded: weakref.WeakValueDictionary[tuple[str, int, int], _Models] = weakref.WeakValueDictionary()
_loading = threading.Lock()


def load_model(path: str) -> dict[str, PairwiseClassifier]:
    """The fitted models, shared by the label tasks running in this process (read-only).

    With many classes a model holds hundreds of MB of pair weights, and each
    concurrent task unpickling its own copy multiplied the peak (K = 500,
    100k items: 7.9 GB). Held weakly: it goes when the last task using it
    ends. Keyed by the file's identity, so a rerun that rewrites it reloads.
    """
    status = os.stat(path)
    key = (path, status.st_mtime_ns, status.st_size)
    with _loading:
        models = _loaded.get(key)
        if models is None:
            with _open_own(path) as handle:
                models = _loaded[key] = _Models(pickle.load(handle))
        return models


def write_parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


def load_pickle(path: str) -> Any:
    with _open_own(path) as handle:
        return pickle.load(handle)
