"""The metrics' confusion counts and calibration sums, counted while the labels are made.

The label pass (and the graph's rewrite of a partition) adds each batch's item_labels and joint_labels rows as
it stages them; the metrics (tasks/metrics.py) then add up these small tables in SQL instead of reading every
staged label row again after the pass (1M items: 0.9 s on the flow's critical path, against about 0.1 s of
counting spread over the pass's threads). Counts and sums add up across batches and partitions.

What is counted, per level (``leaf``: the classes; ``parent``: with a parent level, the classes' parents):
- confusion: per method (base, pairwise, refined), each pair of an item's modalities (modality_a < modality_b,
  by name) and each modality against gold; the joint label against gold (method refined, modality_a joint).
  A missing label (a refined class may be missing) is not counted; a gold value that names no class is
  counted as it is (wrong), and at the parent level it stays as it is unless it names a parent.
- calibration: per modality (refined confidence) and joint, over the items with a gold value, the items, their
  summed confidence and how many are right, in N_BINS equal-width bins (a confidence of 1 in the last).
At the parent level base and pairwise labels are their classes' parents, the refined and joint labels and
confidences are the item's own parent columns (the parent of largest summed probability), and gold is the
parent of the gold class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pairwise_core.metrics import calibration_bins

N_BINS = 10
METHODS = ("base", "pairwise", "refined")
JOINT = "joint"
GOLD = "gold"
CONFUSION_SCHEMA = pa.schema([
    ("level", pa.string()), ("method", pa.string()), ("modality_a", pa.string()), ("modality_b", pa.string()),
    ("pred", pa.string()), ("ref", pa.string()), ("n", pa.int64()),
])
CALIBRATION_SCHEMA = pa.schema([
    ("level", pa.string()), ("modality", pa.string()), ("bin", pa.int32()), ("n", pa.int64()),
    ("confidence", pa.float64()), ("correct", pa.int64()),
])
_SHIFT = np.int64(32)  # a cell's key: pred code << 32 | ref code
_COMPACT_EVERY = 32  # batches of keys kept per cell list before they are added up


class MetricCounts:
    """Confusion counts and calibration sums of the label rows added so far (see the module's docstring)."""

    def __init__(self, class_names: Sequence[str], parents: Mapping[str, str] | None = None) -> None:
        self._words: list[str] = []  # every class, parent and gold value met, by code
        self._codes: dict[str, int] = {}
        for name in class_names:
            self._code(name)
        self._parent_of: tuple[np.ndarray, np.ndarray] | None = None  # (classes' codes, their parents' codes)
        if parents is not None:
            self._parent_of = (np.array([self._code(name) for name in parents], np.int64),
                               np.array([self._code(parent) for parent in parents.values()], np.int64))
        self._cells: dict[tuple[str, str, str, str], list[tuple[np.ndarray, np.ndarray]]] = {}
        self._bins: dict[tuple[str, str], np.ndarray] = {}  # (level, modality) -> calibration_bins' (N_BINS, 3) sums

    def add(self, labels: pa.Table, items: np.ndarray, joint: pa.Table) -> None:
        """Count one batch: its item_labels rows (every modality; ``items``: each row's item, as its index among
        the batch's items, which pairs an item's modalities without matching ids) and its joint_labels rows."""
        row_item = np.asarray(items, np.int64)
        n_items = int(row_item.max()) + 1 if row_item.size else 0
        modality = pc.dictionary_encode(labels.column("modality")).combine_chunks()
        names = modality.dictionary.to_pylist()
        of_row = modality.indices.to_numpy(zero_copy_only=False)
        gold = self._encode(labels.column("gold_class"))
        columns = {method: self._encode(labels.column(f"{method}_class")) for method in METHODS}
        confidence = _floats(labels.column("refined_confidence"))
        for level in self._levels():
            if level == "parent":
                gold = self._parents(gold, keep_outside=True)
                columns = {"base": self._parents(columns["base"]), "pairwise": self._parents(columns["pairwise"]),
                           "refined": self._encode(labels.column("parent_class"))}
                confidence = _floats(labels.column("parent_confidence"))
            by_modality = {}
            for m, name in enumerate(names):
                rows = np.flatnonzero(of_row == m)
                by_modality[name] = rows
                for method, codes in columns.items():
                    self._count((level, method, name, GOLD), codes[rows], gold[rows])
                self._calibrate((level, name), columns["refined"][rows], confidence[rows], gold[rows])
            for a, b in ((a, b) for a in sorted(names) for b in sorted(names) if a < b):
                for method, codes in columns.items():
                    spread = np.full((2, n_items), -1, np.int64)
                    spread[0, row_item[by_modality[a]]] = codes[by_modality[a]]
                    spread[1, row_item[by_modality[b]]] = codes[by_modality[b]]
                    self._count((level, method, a, b), spread[0], spread[1])
        self._add_joint(joint)

    def _add_joint(self, joint: pa.Table) -> None:
        gold = self._encode(joint.column("gold_class"))
        label, confidence = self._encode(joint.column("label")), _floats(joint.column("confidence"))
        for level in self._levels():
            if level == "parent":
                gold = self._parents(gold, keep_outside=True)
                label, confidence = self._encode(joint.column("parent_label")), _floats(joint.column("parent_confidence"))
            self._count((level, "refined", JOINT, GOLD), label, gold)
            self._calibrate((level, JOINT), label, np.where(label >= 0, confidence, np.nan), gold)

    def tables(self) -> tuple[pa.Table, pa.Table]:
        """(confusion, calibration) as tables of CONFUSION_SCHEMA and CALIBRATION_SCHEMA."""
        confusion = []
        words = np.array(self._words, dtype=object)
        for (level, method, a, b), parts in self._cells.items():
            keys, counts = _compacted(parts)
            n = len(keys)
            confusion.append(pa.table({
                "level": pa.array([level] * n, pa.string()), "method": pa.array([method] * n, pa.string()),
                "modality_a": pa.array([a] * n, pa.string()), "modality_b": pa.array([b] * n, pa.string()),
                "pred": pa.array(words[keys >> _SHIFT], pa.string()),
                "ref": pa.array(words[keys & 0xFFFFFFFF], pa.string()), "n": pa.array(counts, pa.int64()),
            }, schema=CONFUSION_SCHEMA))
        calibration = []
        for (level, modality), sums in self._bins.items():
            filled = np.flatnonzero(sums[:, 0] > 0)
            calibration.append(pa.table({
                "level": pa.array([level] * len(filled), pa.string()),
                "modality": pa.array([modality] * len(filled), pa.string()),
                "bin": pa.array(filled, pa.int32()), "n": pa.array(sums[filled, 0].astype(np.int64)),
                "confidence": pa.array(sums[filled, 1]), "correct": pa.array(sums[filled, 2].astype(np.int64)),
            }, schema=CALIBRATION_SCHEMA))
        return (pa.concat_tables(confusion) if confusion else CONFUSION_SCHEMA.empty_table(),
                pa.concat_tables(calibration) if calibration else CALIBRATION_SCHEMA.empty_table())

    def save(self, confusion_path: Path, calibration_path: Path) -> tuple[str, str]:
        """Write tables() as two Parquet files; their paths."""
        confusion, calibration = self.tables()
        pq.write_table(confusion, confusion_path)
        pq.write_table(calibration, calibration_path)
        return str(confusion_path), str(calibration_path)

    def _levels(self) -> tuple[str, ...]:
        return ("leaf",) if self._parent_of is None else ("leaf", "parent")

    def _code(self, word: str) -> int:
        code = self._codes.get(word)
        if code is None:
            code = self._codes[word] = len(self._words)
            self._words.append(word)
        return code

    def _encode(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Each value's code (-1: null), through the column's dictionary: one lookup per distinct value."""
        encoded = pc.dictionary_encode(column).combine_chunks()
        lookup = np.array([self._code(word) for word in encoded.dictionary.to_pylist()] + [-1], np.int64)
        indices = encoded.indices.fill_null(len(lookup) - 1)
        return lookup[indices.to_numpy(zero_copy_only=False)]

    def _parents(self, codes: np.ndarray, keep_outside: bool = False) -> np.ndarray:
        """The parents' codes of classes' codes; another code stays itself with ``keep_outside`` (a gold value
        naming a parent, or nothing), else -1."""
        assert self._parent_of is not None
        lookup = np.arange(len(self._words) + 1, dtype=np.int64) if keep_outside \
            else np.full(len(self._words) + 1, -1, np.int64)
        children, parents = self._parent_of
        lookup[children] = parents
        lookup[-1] = -1  # a null (-1) stays null
        return lookup[codes]

    def _count(self, cell: tuple[str, str, str, str], pred: np.ndarray, ref: np.ndarray) -> None:
        both = (pred >= 0) & (ref >= 0)
        if not both.any():
            return
        words = len(self._words)
        if words * words <= 4 * pred.size:  # few cells for the rows: a count per cell, not a sort (the same keys)
            counts = np.bincount(pred[both] * words + ref[both], minlength=words * words)
            cells = np.flatnonzero(counts)
            keys, counts = (cells // words) << _SHIFT | cells % words, counts[cells]
        else:
            keys, counts = np.unique((pred[both] << _SHIFT) | ref[both], return_counts=True)
        parts = self._cells.setdefault(cell, [])
        parts.append((keys, counts))
        if len(parts) >= _COMPACT_EVERY:
            parts[:] = [_compacted(parts)]

    def _calibrate(self, key: tuple[str, str], pred: np.ndarray, confidence: np.ndarray, gold: np.ndarray) -> None:
        """Add the rows with a gold value and a confidence (a parent's summed probability may pass 1 by
        rounding: it counts as 1)."""
        scored = (gold >= 0) & ~np.isnan(confidence)
        if scored.any():
            sums = self._bins.setdefault(key, np.zeros((N_BINS, 3)))
            sums += calibration_bins(pred[scored] == gold[scored], np.minimum(confidence[scored], 1.0), N_BINS)


def _floats(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 values, NaN for null."""
    values = pc.cast(column, pa.float64())
    return np.asarray(pc.fill_null(values, np.nan) if values.null_count else values)


def _compacted(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.concatenate([k for k, _ in parts])
    counts = np.concatenate([c for _, c in parts])
    unique, index = np.unique(keys, return_inverse=True)
    return unique, np.bincount(index, weights=counts, minlength=len(unique)).astype(np.int64)
