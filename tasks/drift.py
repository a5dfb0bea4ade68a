"""The nightly drift tests (issue 21): what a night labelled against its model's fit sample.

Each label task keeps a seeded share of its rows per modality (``DriftSample``,
one .npz per partition); ``measure_drift`` then compares them, and the
night's consensus labels, with the model's ``DriftReference`` through
``pairwise_core.drift``, and stages the ``drift_metrics`` rows. A drift test
informs, it never fails a run: a model without a reference, too few rows or
a missing scikit-learn give no row and a one-line reason.
"""

from __future__ import annotations

import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from pairwise_core import drift
from pairwise_core.model import DriftReference
from tasks.models import load_model
from tasks.policy import IO_TASK
from tasks.sample import hash_unit, item_hash
from tasks.sources import Plan
from tasks.staging import Staging

DRIFT_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("modality", pa.string()),
    ("metric", pa.string()),
    ("value", pa.float64()),
    ("threshold", pa.float64()),
    ("drifted", pa.bool_()),
    ("n_reference", pa.int64()),
    ("n_current", pa.int64()),
])
# drift_metrics.modality of the class-share test: the consensus labels, not one modality
CONSENSUS = "consensus"
MISSING_SKLEARN = "scikit-learn is not installed (pip install 'pairwise[drift]')"


def sample_rate(n_rows: int) -> float:
    """The share of a night's rows to keep: about twice what a drift test reads (``drift.SAMPLE_ROWS``),
    so rejected rows and the hash's scatter still leave it enough."""
    return min(1.0, 2 * drift.SAMPLE_ROWS / max(1, n_rows))


def _lowest(x: np.ndarray, keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` rows with the lowest keys (all of them if fewer): a seeded uniform sample of the rows, the
    same whatever order and grouping they came in."""
    if len(keys) <= n:
        return x, keys
    rows = np.argpartition(keys, n)[:n]
    return x[rows], keys[rows]


class DriftSample:
    """One partition's seeded share of the rows a night labelled, per modality (float32).

    Bounded: of the rows in the share ``rate``, the ``drift.SAMPLE_ROWS`` with the lowest item hashes are
    kept (a bottom-k sample), so a night that relabels far more items than its rate assumed still keeps at
    most that many rows per modality and partition, and the partitions' samples merge into one uniform
    sample (``load_drift_sample``).
    """

    def __init__(self, modalities: tuple[str, ...], dims: dict[str, int], rate: float, seed: int) -> None:
        self._dims = {m: dims[m] for m in modalities}
        self._rate = rate
        self._seed = seed
        self._x = {m: np.zeros((0, dims[m]), np.float32) for m in modalities}
        self._keys = {m: np.zeros(0, np.float64) for m in modalities}

    def add(self, modality: str, ids: pa.Array, x: np.ndarray) -> None:
        """Keep the rows of ``x`` (one per id in ``ids``: the usable rows of a batch) whose item is sampled."""
        if len(ids) != len(x):
            raise ValueError(f"drift sample of {modality}: {len(ids)} ids for {len(x)} rows")
        keys = hash_unit(item_hash(ids, self._seed))
        kept = keys < self._rate
        x = np.concatenate([self._x[modality], np.asarray(x[kept], np.float32)])
        keys = np.concatenate([self._keys[modality], keys[kept]])
        self._x[modality], self._keys[modality] = _lowest(x, keys, drift.SAMPLE_ROWS)

    def save(self, path: Path) -> str:
        arrays = {}
        for m in self._dims:
            arrays[f"{m}/x"], arrays[f"{m}/key"] = self._x[m], self._keys[m]
        with path.open("wb") as handle:
            np.savez(handle, **arrays)
        return str(path)


def load_drift_sample(paths: list[str], modalities: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The night's sample per modality: the lowest keys of every partition's sample."""
    sample: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for path in paths:
        with np.load(path, allow_pickle=False) as data:
            for m in modalities:
                x, keys = data[f"{m}/x"], data[f"{m}/key"]
                if m in sample:
                    x, keys = np.concatenate([sample[m][0], x]), np.concatenate([sample[m][1], keys])
                sample[m] = _lowest(x, keys, drift.SAMPLE_ROWS)
    return {m: sample[m][0] if m in sample else np.zeros((0, 0), np.float32) for m in modalities}


def consensus_ids(joint_paths: list[str], class_names: tuple[str, ...]) -> np.ndarray:
    """The night's consensus labels (joint_labels.label) as class ids; names of no class are left out."""
    names = pa.array(class_names, pa.string())
    ids = [pc.index_in(pq.read_table(path, columns=["label"]).column("label"), value_set=names).drop_null()
           for path in joint_paths]
    return np.concatenate([np.asarray(a.to_numpy(), np.int64) for a in ids]) if ids else np.zeros(0, np.int64)


def too_few(name: str, n_reference: int, n_current: int) -> str | None:
    """Why a side is too small to test, or None."""
    if min(n_reference, n_current) >= drift.MIN_ROWS:
        return None
    return f"{name} has {n_reference:,} reference and {n_current:,} current rows (a test needs {drift.MIN_ROWS})"


def drift_row(modality: str, result: drift.DriftResult, n_reference: int, n_current: int) -> dict[str, Any]:
    return {"modality": modality, "metric": result.metric, "value": result.value, "threshold": result.threshold,
            "drifted": bool(result.drifted), "n_reference": n_reference, "n_current": n_current}


def drift_rows(reference: DriftReference, current: dict[str, np.ndarray], labels: np.ndarray, n_classes: int,
               seed: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The drift_metrics rows of every test the samples allow, and why the others were not run."""
    rows, skipped = [], []
    for modality, x in current.items():
        ref = reference.x.get(modality)
        if ref is None:
            skipped.append(f"{modality} is not in the model's drift reference")
        elif reason := too_few(modality, len(ref), len(x)):
            skipped.append(reason)
        elif MISSING_SKLEARN in skipped:
            continue
        else:
            try:
                result = drift.embedding_drift(ref, x, seed=seed)
            except ImportError:
                skipped.append(MISSING_SKLEARN)
                continue
            rows.append(drift_row(modality, result, min(len(ref), drift.SAMPLE_ROWS),
                                  min(len(x), drift.SAMPLE_ROWS)))
    if reason := too_few(CONSENSUS, reference.labels.size, labels.size):
        skipped.append(reason)
    else:
        result = drift.class_share_shift(reference.labels, labels, n_classes, seed=seed)
        rows.append(drift_row(CONSENSUS, result, reference.labels.size, labels.size))
    return rows, skipped


def warm_up() -> None:
    """Import scikit-learn on a daemon thread of its own (0.8 s here). An incremental night calls this as it
    starts, so the import overlaps its planning and labelling instead of delaying the drift tests after
    them; a missing scikit-learn is left for the tests to report."""
    threading.Thread(target=_import_learner, name="drift-warm-up", daemon=True).start()


def _import_learner() -> None:
    with suppress(ImportError):
        drift.import_learner()


@task(name="measure-drift", **IO_TASK)
def measure_drift(sealed: dict[str, str], sample_paths: list[str], joint_paths: list[str], plan: Plan,
                  staging: Staging, run_id: str, seed: int) -> dict[str, Any]:
    """Compare the night's drift samples and consensus labels with the model's drift reference.

    Returns ``path`` (the staged drift_metrics part, None without rows),
    ``rows`` (their values, without run_id) and ``skipped`` (one line: the
    tests not run and why, or None).
    """
    model = load_model(sealed["folder"], sealed["content_hash"], sealed["model_id"])
    if model.drift_reference is None:
        return {"path": None, "rows": [], "skipped": f"model {sealed['model_id']} has no drift reference "
                                                    "(stored before the drift tests; a full run stores one)"}
    current = load_drift_sample(sample_paths, plan.modalities)
    labels = consensus_ids(joint_paths, plan.class_names)
    rows, skipped = drift_rows(model.drift_reference, current, labels, len(plan.class_names), seed)
    path = None
    if rows:
        path = str(staging.part("drift_metrics", 0))
        pq.write_table(pa.Table.from_pylist([{"run_id": run_id, **row} for row in rows], schema=DRIFT_SCHEMA), path)
    return {"path": path, "rows": rows, "skipped": "; ".join(skipped) or None}
