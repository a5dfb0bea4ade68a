"""The seeded sample of a run: rows drawn in pass 1, staged per partition, read back whole after it.

Bounded by its size, not the catalog's: it carries the refinement's inner EM
iterations and the calibration of its confidence (METHOD.md step 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tasks.sources import BatchEmbeddings, Plan

# out-of-fold fits (the confidence weights, the label-aware review): an item is judged by what the other
# folds fitted
N_FOLDS = 5
_FNV_OFFSET, _FNV_PRIME = np.uint64(0xCBF29CE484222325), np.uint64(0x100000001B3)


def item_folds(ids: pa.Array, seed: int) -> np.ndarray:
    """Each item's fold (0 .. N_FOLDS - 1), from its ``item_hash``: the same in every pass and every re-run,
    whatever the partitioning."""
    return folds_of(item_hash(ids, seed))


def folds_of(hashes: np.ndarray) -> np.ndarray:
    """The folds of items with these ``item_hash`` values (the hash's remainder)."""
    return (hashes % np.uint64(N_FOLDS)).astype(np.int64)


def hash_unit(hashes: np.ndarray) -> np.ndarray:
    """Item hashes read as numbers in [0, 1) (their top 53 bits): an item is in a seeded share ``rate`` of
    the catalog if its number is below it, whatever the batch, partition or file it comes in. (Independent
    of its fold, the hash's remainder, to within 5 in 2^64.)"""
    return (hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53


def item_hash(ids: pa.Array, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each item_id (FNV-1a, then a finalizer), vectorized over the ids' bytes, a
    step per byte position instead of a call per item."""
    ids = ids.cast(pa.string())
    offsets = np.frombuffer(ids.buffers()[1], np.int32, len(ids) + 1, ids.offset * 4).astype(np.int64)
    data = np.frombuffer(ids.buffers()[2], np.uint8) if len(ids) else np.zeros(0, np.uint8)
    lengths = np.diff(offsets)
    h = np.full(len(ids), _FNV_OFFSET ^ np.uint64(seed), np.uint64)
    for j in range(int(lengths.max(initial=0))):
        live = np.flatnonzero(lengths > j)
        h[live] = (h[live] ^ data[offsets[live] + j]) * _FNV_PRIME
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


def gold_codes(column: pa.Array, plan: Plan) -> np.ndarray:
    """The gold column (a batch's) as class indices, -1 where it is null or names no class of the run."""
    gold = column.cast(pa.string())
    names = pa.array(plan.class_names, pa.string())
    return pc.index_in(gold, value_set=names).fill_null(-1).to_numpy().astype(np.int64)


@dataclass
class Sample:
    """The sample's rows: per modality the embeddings (zero where rejected) and which are usable; folds; gold."""

    x: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    fold: np.ndarray
    gold: np.ndarray  # -1: unknown

    @property
    def n_rows(self) -> int:
        return self.fold.size

    def rows(self, picked: np.ndarray) -> Sample:
        """The sample restricted to some of its rows."""
        return Sample({m: x[picked] for m, x in self.x.items()}, {m: v[picked] for m, v in self.valid.items()},
                      self.fold[picked], self.gold[picked])


class SampleParts:
    """One partition's share of the sample, gathered batch by batch."""

    def __init__(self, plan: Plan) -> None:
        self._plan = plan
        self._x: dict[str, list[np.ndarray]] = {m: [] for m in plan.modalities}
        self._valid: dict[str, list[np.ndarray]] = {m: [] for m in plan.modalities}
        self._fold: list[np.ndarray] = []
        self._gold: list[np.ndarray] = []

    def add_modality(self, modality: str, usable: BatchEmbeddings, rows: np.ndarray) -> None:
        """The batch's sampled ``rows`` of one modality (row numbers within the batch)."""
        valid = usable.valid[rows]
        x = np.zeros((rows.size, self._plan.dims[modality]), dtype=np.float32)
        position = np.cumsum(usable.valid) - 1  # row -> its place among the usable rows
        x[valid] = usable.x[position[rows[valid]]]
        self._x[modality].append(x)
        self._valid[modality].append(valid)

    def add_rows(self, fold: np.ndarray, gold: np.ndarray | None, n: int) -> None:
        self._fold.append(fold)
        self._gold.append(np.full(n, -1, dtype=np.int64) if gold is None else gold)

    def save(self, path: Path) -> str:
        arrays = {"fold": _concat(self._fold, (0,), np.int64), "gold": _concat(self._gold, (0,), np.int64)}
        for m, dim in self._plan.dims.items():
            arrays[f"{m}/x"] = _concat(self._x[m], (0, dim), np.float32)
            arrays[f"{m}/valid"] = _concat(self._valid[m], (0,), bool)
        with path.open("wb") as handle:
            np.savez(handle, **arrays)
        return str(path)


def load_sample(paths: list[str], modalities: tuple[str, ...]) -> Sample:
    """The whole sample, from every partition's part."""
    parts = []
    for path in paths:
        with np.load(path) as data:
            parts.append({name: data[name] for name in data.files})
    return Sample(
        x={m: np.concatenate([p[f"{m}/x"] for p in parts]) for m in modalities},
        valid={m: np.concatenate([p[f"{m}/valid"] for p in parts]) for m in modalities},
        fold=np.concatenate([p["fold"] for p in parts]),
        gold=np.concatenate([p["gold"] for p in parts]),
    )


def _concat(parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(empty_shape, dtype=dtype)
