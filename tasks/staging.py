"""A run's scratch space: files that tasks hand to each other by path, never visible to readers.

Everything lives under `<db>.staging/<run_id>/` and is removed when the run
ends, whether it succeeded or failed.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pairwise_core import PairStats, PairwiseClassifier, embeddings
from tasks.sources import EMBEDDING_SUFFIX, Plan


@dataclass(frozen=True)
class Staging:
    """Paths of one run's staged files."""

    root: Path

    @classmethod
    def for_run(cls, db: str, run_id: str) -> Staging:
        return cls(Path(f"{db}.staging") / run_id)

    @classmethod
    def leftovers(cls, db: str, keep: set[str]) -> list[Staging]:
        """Staging folders of the runs not in ``keep``."""
        root = Path(f"{db}.staging")
        return [cls(path) for path in sorted(root.iterdir()) if path.name not in keep] if root.is_dir() else []

    def path(self, *parts: str) -> Path:
        path = self.root.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def part(self, kind: str, index: int) -> Path:
        return self.path(kind, f"part-{index:05d}.parquet")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        parent = self.root.parent
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()


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
            with open(path, "rb") as handle:
                models = _loaded[key] = _Models(pickle.load(handle))
        return models


def write_parquet(path: Path, table: pa.Table) -> str:
    pq.write_table(table, path)
    return str(path)


def load_pickle(path: str) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)
