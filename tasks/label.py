"""Pass 2: label one partition with the fitted model; stage its item_labels, rejected_items and review_items rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task

from pairwise_core import Classification
from pairwise_core.joint import joint_log_posterior
from pairwise_core.refine import log_softmax, row_draws
from pairwise_core.review import review_items
from tasks.policy import IO_TASK
from tasks.refine import Refinement
from tasks.sample import N_FOLDS, gold_codes
from tasks.sources import Partition, Plan, matrix, read_partition
from tasks.staging import Staging, load_model, load_pickle

LABEL_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("item_id", pa.string()),
    ("modality", pa.string()),
    ("base_class", pa.string()),
    ("base_score", pa.float32()),
    ("base_margin", pa.float32()),
    ("pairwise_class", pa.string()),
    ("pairwise_margin", pa.float32()),
    ("gold_class", pa.string()),
    ("given_gap", pa.float32()),
    ("given_h2h", pa.float32()),
    ("refined_class", pa.string()),
    ("refined_confidence", pa.float32()),
])

JOINT_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("item_id", pa.string()),
    ("label", pa.string()),
    ("confidence", pa.float32()),
    ("status", pa.string()),
    ("agreeing_modalities", pa.int32()),
    ("n_modalities", pa.int32()),
    ("gold_class", pa.string()),
])


EVIDENCE_TYPE = pa.struct([
    ("modality", pa.string()),
    ("base_label", pa.string()),
    ("base_margin", pa.float32()),
    ("pairwise_label", pa.string()),
    ("pairwise_margin", pa.float32()),
    ("given_gap", pa.float32()),
    ("given_h2h", pa.float32()),
])

# one row per item with a known given label; evidence only where it speaks against the label
REVIEW_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("given_label", pa.string()),
    ("suggested_label", pa.string()),
    ("raw_score", pa.float64()),
    ("agreeing_modalities", pa.int32()),
    ("evidence", pa.list_(EVIDENCE_TYPE)),
])

REJECTED_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("item_id", pa.string()),
    ("modality", pa.string()),
    ("reason", pa.string()),
])


@task(name="label-partition", **IO_TASK)
def label_partition(
    partition: Partition, plan: Plan, model_path: str, refinement_path: str, seed: int, staging: Staging, run_id: str
) -> dict[str, str]:
    """Run the tourney and the refinement over one partition, streaming; stage its item_labels,
    joint_labels, rejected_items and review_items rows.

    Every (item, modality) lands in exactly one of item_labels and rejected_items. The partition is
    decoded again rather than spilled in pass 1: with Arrow's allocator
    tuned, decoding (about 0.9 GB/s here) beat writing and reading back a raw
    float32 spill (bench/bench_pipeline.py, 1M items).
    """
    models = load_model(model_path)
    refinement: Refinement = load_pickle(refinement_path)
    folds = row_draws(seed, partition.index, partition.n_rows, 0.0, N_FOLDS)[1]  # the folds pass 1 drew
    offset = 0
    names = pa.array(plan.class_names, pa.string())
    kinds = ("item_labels", "joint_labels", "rejected_items", "review_items")
    paths = {kind: staging.part(kind, partition.index) for kind in kinds}
    with pq.ParquetWriter(paths["item_labels"], LABEL_SCHEMA) as labels, \
            pq.ParquetWriter(paths["joint_labels"], JOINT_SCHEMA) as joint_labels, \
            pq.ParquetWriter(paths["rejected_items"], REJECTED_SCHEMA) as rejected, \
            pq.ParquetWriter(paths["review_items"], REVIEW_SCHEMA) as review:
        for batch in read_partition(partition, plan.item_columns()):
            fold = folds[offset : offset + batch.num_rows]
            offset += batch.num_rows
            joint = Joint.empty(batch.num_rows, len(models), len(plan.class_names))
            ids = batch.column("item_id").cast(pa.string())
            gold = batch.column(plan.gold_column).cast(pa.string()) if plan.gold_column else None
            # the gold column is the catalog's current label: review it in the same pass (-1: none or unknown)
            given = None if gold is None else gold_codes(batch, plan)
            evidence = Evidence.empty(batch.num_rows, len(models))
            for column, (modality, model) in enumerate(models.items()):
                usable = matrix(batch, modality, plan.dims[modality])
                if not usable.valid.all():
                    bad = ~usable.valid
                    rejected.write_table(pa.table({
                        "run_id": _repeat(run_id, int(bad.sum())),
                        "item_id": ids.filter(pa.array(bad)),
                        "modality": _repeat(modality, int(bad.sum())),
                        "reason": pa.array(usable.reasons[bad], pa.string()),
                    }, schema=REJECTED_SCHEMA))
                n = len(usable.x)
                if n == 0:
                    continue
                keep = pa.array(usable.valid)
                result = model.classify(usable.x, given=None if given is None else given[usable.valid])
                terms = refinement.refiners[modality].log_terms(usable.x, result.label)
                refined = terms.argmax(axis=1)
                weight = refinement.view_weights[fold[usable.valid], column]
                confidence = np.exp(log_softmax(terms * weight[:, None])[np.arange(n), refined])
                joint.record(column, usable.valid, terms, refined)
                no_gold = pa.nulls(n, pa.float32())
                labels.write_table(pa.table({
                    "run_id": _repeat(run_id, n),
                    "item_id": ids.filter(keep),
                    "modality": _repeat(modality, n),
                    "base_class": names.take(result.base_label),
                    "base_score": pa.array(result.base_score.astype(np.float32)),
                    "base_margin": pa.array(result.base_margin.astype(np.float32)),
                    "pairwise_class": names.take(result.label),
                    "pairwise_margin": pa.array(result.margin.astype(np.float32)),
                    "gold_class": gold.filter(keep) if gold is not None else pa.nulls(n, pa.string()),
                    "given_gap": no_gold if given is None else _nan_to_null(result.given_gap),
                    "given_h2h": no_gold if given is None else _nan_to_null(result.given_h2h),
                    "refined_class": names.take(refined),
                    "refined_confidence": pa.array(confidence.astype(np.float32)),
                }, schema=LABEL_SCHEMA))
                if given is not None:
                    evidence.record(column, usable.valid, result)
            if given is not None:
                review.write_table(evidence.review_table(ids, given, names, list(models)))
            joint_labels.write_table(joint.table(refinement.joint_weights[fold], run_id, ids, gold, names))
    return {kind: str(path) for kind, path in paths.items()}


@dataclass
class Joint:
    """One record batch's refined log terms and labels by modality, for each item's joint label."""

    terms: np.ndarray  # (rows, modalities, K)
    present: np.ndarray  # (rows, modalities)
    refined: np.ndarray  # (rows, modalities): each modality's refined label

    @classmethod
    def empty(cls, n: int, n_modalities: int, n_classes: int) -> Joint:
        return cls(np.zeros((n, n_modalities, n_classes), np.float32), np.zeros((n, n_modalities), bool),
                   np.full((n, n_modalities), -1, np.int64))

    def record(self, column: int, valid: np.ndarray, terms: np.ndarray, refined: np.ndarray) -> None:
        self.terms[valid, column] = terms
        self.present[valid, column] = True
        self.refined[valid, column] = refined

    def table(self, weights: np.ndarray, run_id: str, ids: pa.Array, gold: pa.Array | None,
              names: pa.Array) -> pa.Table:
        """joint_labels rows of the items with at least one modality (see sql/create_consensus_labels.sql)."""
        rows = np.flatnonzero(self.present.any(axis=1))
        present = self.present[rows]
        log_p = joint_log_posterior(self.terms[rows], present, weights[rows])
        label = log_p.argmax(axis=1)
        n_modalities = present.sum(axis=1)
        agreeing = ((self.refined[rows] == label[:, None]) & present).sum(axis=1)
        status = np.where(n_modalities == 1, "single_modality", np.where(agreeing == n_modalities, "agreed", "split"))
        picked = pa.array(rows)
        return pa.table({
            "run_id": _repeat(run_id, rows.size),
            "item_id": ids.take(picked),
            "label": names.take(label),
            "confidence": pa.array(np.exp(log_p.max(axis=1)).astype(np.float32)),
            "status": pa.array(status.astype(object), pa.string()),
            "agreeing_modalities": pa.array(agreeing.astype(np.int32)),
            "n_modalities": pa.array(n_modalities.astype(np.int32)),
            "gold_class": gold.take(picked) if gold is not None else pa.nulls(rows.size, pa.string()),
        }, schema=JOINT_SCHEMA)


@dataclass
class Evidence:
    """One record batch's per-modality results, as (rows, modalities) arrays, for the review of its items."""

    base_label: np.ndarray
    base_margin: np.ndarray
    label: np.ndarray
    margin: np.ndarray
    given_gap: np.ndarray
    given_h2h: np.ndarray
    reviewed: np.ndarray

    @classmethod
    def empty(cls, n: int, n_modalities: int) -> Evidence:
        shape = (n, n_modalities)
        nan = lambda: np.full(shape, np.nan, np.float32)  # noqa: E731
        return cls(np.zeros(shape, np.int64), nan(), np.zeros(shape, np.int64), nan(), nan(), nan(),
                   np.zeros(shape, bool))

    def record(self, column: int, valid: np.ndarray, result: Classification) -> None:
        for name in ("base_label", "base_margin", "label", "margin", "given_gap", "given_h2h"):
            getattr(self, name)[valid, column] = getattr(result, name)
        self.reviewed[valid, column] = ~np.isnan(result.given_gap)

    def review_table(self, ids: pa.Array, given: np.ndarray, names: pa.Array, modalities: list[str]) -> pa.Table:
        """review_items rows of the batch's items with a known given label; evidence only where it speaks against it."""
        rows = np.flatnonzero(self.reviewed.any(axis=1))
        reviewed = self.reviewed[rows]
        verdict = review_items(given[rows], self.base_label[rows], self.label[rows], self.margin[rows],
                               self.given_gap[rows], reviewed)
        against = verdict.raw_score > 0
        shown = reviewed & against[:, None]  # row-major flattening keeps each item's modalities together
        offsets = np.concatenate([[0], np.cumsum(shown.sum(axis=1))]).astype(np.int32)
        column = np.broadcast_to(np.arange(len(modalities)), shown.shape)[shown]
        pick = lambda values: values[rows][shown]  # noqa: E731
        structs = pa.StructArray.from_arrays([
            pa.array(np.asarray(modalities, dtype=object)[column], pa.string()),
            names.take(pick(self.base_label)), pa.array(pick(self.base_margin)),
            names.take(pick(self.label)), pa.array(pick(self.margin)),
            pa.array(pick(self.given_gap)), pa.array(pick(self.given_h2h)),
        ], fields=list(REVIEW_SCHEMA.field("evidence").type.value_type))
        suggested = verdict.suggested
        return pa.table({
            "item_id": ids.take(pa.array(rows)),
            "given_label": names.take(pa.array(given[rows])),
            "suggested_label": names.take(pa.array(suggested, mask=suggested < 0)),
            "raw_score": pa.array(verdict.raw_score),
            "agreeing_modalities": pa.array(verdict.agreeing.astype(np.int32)),
            "evidence": pa.ListArray.from_arrays(pa.array(offsets), structs, mask=pa.array(~against)),
        }, schema=REVIEW_SCHEMA)


def _nan_to_null(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float32(), mask=np.isnan(values))


def _repeat(value: str, n: int) -> pa.Array:
    return pa.array(np.full(n, value, dtype=object), pa.string())
