"""Pass 2: label one partition with the fitted model; stage its item_labels, rejected_items and review_items rows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from prefect import task

from pairwise_core.hierarchy import Level, ParentPowers
from pairwise_core.joint import alone_or_joint, joint_log_posterior
from pairwise_core.model import Refinement, Review
from tasks.policy import IO_TASK
from tasks.drift import DriftSample
from tasks.fingerprint import fingerprints
from tasks.graph import GraphParts
from tasks.metric_counts import MetricCounts
from tasks.models import load_model
from tasks.night import Selection
from tasks.sample import gold_codes, item_folds, item_hash
from tasks.sources import Partition, Plan, matrix, read_partition
from tasks.staging import Staging, ends_with_its_run, staged_writer

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
    ("parent_class", pa.string()),
    ("parent_confidence", pa.float32()),
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
    ("parent_label", pa.string()),
    ("parent_confidence", pa.float32()),
])


# one row per item with a known given label (sql/migrations/004_review_routes.sql says what each column means)
REVIEW_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("given_label", pa.string()),
    ("suggested_label", pa.string()),
    ("p_given", pa.float64()),
    ("p_given_parent", pa.float64()),
    ("route", pa.string()),
    ("zero_shot_p_given", pa.float64()),
    ("zero_shot_label", pa.string()),
    ("label_aware_p_given", pa.float64()),
    ("label_aware_label", pa.string()),
    ("agreeing_modalities", pa.int32()),
    ("neighbours_p_given", pa.float64()),
    ("neighbours_label", pa.string()),
])

# one row per item the run labelled: what the catalog's state (catalog_items) records of it at commit
STATE_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("fingerprint", pa.uint64()),
    ("version", pa.string()),
])

REJECTED_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("item_id", pa.string()),
    ("modality", pa.string()),
    ("reason", pa.string()),
])


@task(name="label-partition", **IO_TASK)
@ends_with_its_run
def label_partition(
    partition: Partition, plan: Plan, sealed: dict[str, str], seed: int, staging: Staging, run_id: str,
    selections: dict[int, Selection] | None = None, drift_rate: float | None = None, graph: bool = False,
    review_as: tuple[str, float] | None = None,
) -> dict[str, Any]:
    """Run the tourney and the refinement over one partition, streaming; stage its item_labels,
    joint_labels, rejected_items, review_items and catalog_state rows, and count the rows labelled.

    ``selections`` (an incremental night's, by partition index): this partition's says which rows to label;
    a partition without one, or no selections at all, labels every row. With ``drift_rate`` (a night with a
    stored model) it also stages a seeded sample of the rows it labelled, for the drift tests (tasks/drift.py).
    With ``graph`` it stages the rows' graph points and refined posteriors too (``graph_parts``), in the order
    of its catalog_state rows, for the graph refinement (tasks/graph.py). ``review_as``: the run's --review and
    --issues-below, which the model's review follows (``Review.as_run_asks``; None: as it was fitted).

    ``sealed`` names the sealed model (``folder``, ``content_hash``, ``model_id``): labelling reads the model
    only through ``load_model``, as a stored model is read. Every (item, modality) lands in exactly one of
    item_labels and rejected_items. The partition is
    decoded again rather than spilled in pass 1: with Arrow's allocator
    tuned, decoding (about 0.9 GB/s here) beat writing and reading back a raw
    float32 spill (bench/bench_pipeline.py, 1M items).
    """
    fitted = load_model(sealed["folder"], sealed["content_hash"], sealed["model_id"])
    models, refinement = fitted.classifiers.models, fitted.refinement
    review = fitted.review if plan.gold_column else None  # a catalog without labels: nothing to review
    if review_as is not None and plan.gold_column:  # a model fitted without labels reviews them zero-shot
        review = (review or Review.zero_shot(review_as[1])).as_run_asks(*review_as)
    names = pa.array(plan.class_names, pa.string())
    kinds = ("item_labels", "joint_labels", "rejected_items", "review_items", "catalog_state")
    paths = {kind: staging.part(kind, partition.index) for kind in kinds}
    selection = (selections or {}).get(partition.index)
    choose = selection.chooser() if selection is not None else None
    n_labelled = 0
    drift_sample = None if drift_rate is None else DriftSample(plan.modalities, plan.dims, drift_rate, seed)
    graph_parts = GraphParts(list(models), fitted.graph.dims) if graph else None
    n_classes = len(plan.class_names)
    powers = refinement.parent_powers_for(plan.parent)  # None: the parent confidence is the plain sum
    counts = MetricCounts(plan.class_names, plan.parents_by_class())
    with staged_writer(paths["item_labels"], LABEL_SCHEMA) as labels, \
            staged_writer(paths["joint_labels"], JOINT_SCHEMA) as joint_labels, \
            staged_writer(paths["rejected_items"], REJECTED_SCHEMA) as rejected, \
            staged_writer(paths["review_items"], REVIEW_SCHEMA) as reviews, \
            staged_writer(paths["catalog_state"], STATE_SCHEMA) as state:
        for batch in read_partition(partition, plan.item_columns()):
            usables = [matrix(batch, modality, plan.dims[modality]) for modality in models]
            prints = fingerprints(usables, batch.num_rows)
            if choose is not None:
                chosen = choose(batch.column("item_id").cast(pa.string()), prints)
                if not chosen.any():
                    continue
                if not chosen.all():  # the usual incremental batch: a few rows, decoded again alone
                    batch, prints = batch.filter(pa.array(chosen)), prints[chosen]
                    usables = [matrix(batch, modality, plan.dims[modality]) for modality in models]
            n_labelled += batch.num_rows
            ids = batch.column("item_id").cast(pa.string())
            state.write_table(pa.table({
                "item_id": ids, "fingerprint": pa.array(prints, pa.uint64()),
                "version": (batch.column(plan.changed_column).cast(pa.string()) if plan.changed_column
                            else pa.nulls(batch.num_rows, pa.string())),
            }, schema=STATE_SCHEMA))
            fold = item_folds(ids, seed)  # the folds pass 1 drew
            joint = Joint.empty(batch.num_rows, len(models), len(plan.class_names))
            gold = given_labels(batch.column(plan.gold_column)) if plan.gold_column else None
            # the gold column is the catalog's current label: review it in the same pass (-1: none or unknown)
            given = None if gold is None else gold_codes(gold, plan)
            # per modality, every row's embedding and inverse norm (zero where rejected), for the review
            xs: list[np.ndarray] = []
            scales: list[np.ndarray] = []
            priors: list[np.ndarray] = []
            label_tables: list[pa.Table] = []
            label_rows: list[np.ndarray] = []  # each label row's row in the batch
            for column, (modality, model) in enumerate(models.items()):
                usable = usables[column]
                if not usable.valid.all():
                    bad = ~usable.valid
                    rejected.write_table(pa.table({
                        "run_id": _repeat(run_id, int(bad.sum())),
                        "item_id": ids.filter(pa.array(bad)),
                        "modality": _repeat(modality, int(bad.sum())),
                        "reason": pa.array(usable.reasons[bad], pa.string()),
                    }, schema=REJECTED_SCHEMA))
                n = len(usable.x)
                if review is not None:
                    inverse = usable.inverse_norms()
                    every = n == batch.num_rows
                    xs.append(usable.x if every else _scatter_rows(usable.x, usable.valid))
                    scales.append(inverse if every else _scatter_rows(inverse, usable.valid))
                if graph_parts is not None:
                    priors.append(np.zeros((batch.num_rows, n_classes), np.float32))
                if n == 0:
                    continue
                keep = pa.array(usable.valid)
                if drift_sample is not None:
                    drift_sample.add(modality, ids.filter(keep), usable.x)
                # the classifier's class embeddings are the refiner's: one product over the rows gives the
                # tourney's scores, the anchor's cosines and the refinement's E-step products
                refiner = refinement.refiners[modality]
                result = model.classify(usable.x, given=None if given is None else given[usable.valid],
                                        directions=refiner.directions(usable.x.dtype),
                                        square_norms=usable.square_norms)
                terms = refiner.log_terms_of(result.products, result.cosines, result.label)
                result = dataclasses.replace(result, cosines=None, products=None)  # n x K floats no longer needed
                refined = terms.argmax(axis=1)
                weight = refinement.view_weights[fold[usable.valid], column]
                posterior, confidence = tempered_posterior(
                    terms, refined, weight, full=plan.parent is not None or graph_parts is not None)
                parent_class, parent_confidence = (
                    parent_columns(plan.parent, posterior,
                                   None if powers is None else powers.view[fold[usable.valid], column])
                    if plan.parent is not None else (pa.nulls(n, pa.string()), pa.nulls(n, pa.float32())))
                if graph_parts is not None:
                    priors[-1][usable.valid] = posterior
                joint.record(column, usable.valid, terms, refined)
                no_gold = pa.nulls(n, pa.float32())
                label_tables.append(pa.table({
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
                    "parent_class": parent_class,
                    "parent_confidence": parent_confidence,
                }, schema=LABEL_SCHEMA))
                labels.write_table(label_tables[-1])
                label_rows.append(np.flatnonzero(usable.valid))
            judged = None
            if review is not None:
                judged = judge(review, joint, refinement.free_weights, xs, scales, fold, given)
                # with the graph, every judged row is staged: the graph step's vote may move p_given either way,
                # and the rows below keep_below are picked after it (tasks/graph_labels.py)
                reviews.write_table(review_table(judged, review.route, 1.0 if graph_parts is not None
                                                 else review.keep_below, ids, given, joint, names, plan.parent))
            joint_table = joint.table(refinement, fold, run_id, ids, gold, names, plan.parent, powers)
            joint_labels.write_table(joint_table)
            counts.add(pa.concat_tables([LABEL_SCHEMA.empty_table(), *label_tables]),
                       np.concatenate([np.zeros(0, np.int64), *label_rows]), joint_table)
            if graph_parts is not None:
                views = {m: (u.x, u.inverse_norms(), u.valid) for m, u in zip(models, usables, strict=True)}
                rows, log_p = joint.log_posterior(refinement, fold)
                joint_prior = np.zeros((batch.num_rows, n_classes), np.float32)
                joint_prior[rows] = np.exp(log_p)
                route = None
                if judged is not None:
                    route = np.zeros((batch.num_rows, n_classes), np.float32)
                    route[judged.rows] = judged.route
                graph_parts.add(fitted.graph.project(batch.num_rows, views), priors, joint_prior, joint.present, fold,
                                given, item_hash(ids, seed), route)
    sampled = drift_sample and drift_sample.save(staging.path("drift_sample", f"part-{partition.index:05d}.npz"))
    staged = graph_parts and graph_parts.save(staging.path("graph_parts", f"part-{partition.index:05d}"),
                                              n_classes, None if review is None else review.keep_below)
    confusion, calibration = counts.save(staging.part("metric_confusion", partition.index),
                                         staging.part("metric_calibration", partition.index))
    return {**{kind: str(path) for kind, path in paths.items()}, "n_labelled": n_labelled, "drift_sample": sampled,
            "graph_parts": staged, "metric_confusion": confusion, "metric_calibration": calibration,
            "parent_powers": powers is not None}


def tempered_posterior(terms: np.ndarray, top: np.ndarray, weight: np.ndarray,
                       full: bool = True) -> tuple[np.ndarray | None, np.ndarray]:
    """softmax(weight * terms) per row (``weight`` (n,) >= 0) and its value at the row's ``top`` class, the
    argmax of ``terms``: (posterior or None without ``full``, confidence), in the terms' dtype.

    One shifted copy of the terms, scaled and exponentiated in place: the top class's shifted term is 0,
    so no max is taken and its probability is 1 / the row's sum (the same as the posterior's entry).
    """
    shifted = terms - terms[np.arange(len(terms)), top][:, None]
    shifted *= weight.astype(terms.dtype)[:, None]
    np.exp(shifted, out=shifted)
    total = shifted.sum(axis=1)
    if full:
        shifted /= total[:, None]
    return (shifted if full else None), 1 / total


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

    def table(self, refinement: Refinement, fold: np.ndarray, run_id: str, ids: pa.Array, gold: pa.Array | None,
              names: pa.Array, parent: Level | None = None, powers: ParentPowers | None = None) -> pa.Table:
        """joint_labels rows of the items with at least one modality (see sql/create_consensus_labels.sql);
        ``powers`` (the model's, by the row's ``fold``) calibrate the parent confidence (``parent_columns``)."""
        rows, log_p = self.log_posterior(refinement, fold)
        picked = pa.array(rows)
        power = None if powers is None else alone_or_joint(self.present[rows], powers.joint[fold[rows]],
                                                           powers.view[fold[rows]])
        return joint_rows(run_id, ids.take(picked), np.exp(log_p), self.refined[rows], self.present[rows],
                          gold.take(picked) if gold is not None else None, names, parent, power)

    def log_posterior(self, refinement: Refinement, fold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows with at least one modality, and their joint log posterior under their fold's weights (an
        item with one modality: that modality's own, ``alone_or_joint``)."""
        rows = np.flatnonzero(self.present.any(axis=1))
        present = self.present[rows]
        weights = alone_or_joint(present, refinement.joint_weights[fold[rows]], refinement.view_weights[fold[rows]])
        return rows, joint_log_posterior(self.terms[rows], present, weights)


STATUSES = pa.array(["single_modality", "agreed", "split"], pa.string())


def joint_rows(run_id: str, ids: pa.Array, posterior: np.ndarray, refined: np.ndarray, present: np.ndarray,
               gold: pa.Array | None, names: pa.Array, parent: Level | None,
               parent_power: np.ndarray | None = None) -> pa.Table:
    """joint_labels rows from the items' joint posterior and their modalities' own refined labels
    (``refined``, ``present``: (n, modalities)); ``parent_power``: as ``parent_columns``."""
    n = len(posterior)
    label = posterior.argmax(axis=1)
    parent_label, parent_confidence = parent_columns(parent, posterior, parent_power)
    n_modalities = present.sum(axis=1)
    agreeing = ((refined == label[:, None]) & present).sum(axis=1)
    status = np.where(n_modalities == 1, 0, np.where(agreeing == n_modalities, 1, 2))
    return pa.table({
        "run_id": _repeat(run_id, n),
        "item_id": ids,
        "label": names.take(label),
        "confidence": pa.array(posterior[np.arange(n), label].astype(np.float32)),
        "status": STATUSES.take(pa.array(status)),
        "agreeing_modalities": pa.array(agreeing.astype(np.int32)),
        "n_modalities": pa.array(n_modalities.astype(np.int32)),
        "gold_class": gold if gold is not None else pa.nulls(n, pa.string()),
        "parent_label": parent_label,
        "parent_confidence": parent_confidence,
    }, schema=JOINT_SCHEMA)


@dataclass
class Judged:
    """The review's judgement of a batch's reviewable rows: those with a known given label and a modality."""

    rows: np.ndarray  # the rows, in the batch
    route: np.ndarray  # (n, K) the route's log posterior, which gives p_given
    zero_shot: np.ndarray  # (n, K)
    aware: np.ndarray | None  # (n, K); None for the zero-shot route


def judge(review: Review, joint: Joint, free_weights: np.ndarray, xs: list[np.ndarray], scales: list[np.ndarray],
          fold: np.ndarray, given: np.ndarray) -> Judged:
    """The review's routes over the batch's reviewable rows. ``xs`` and ``scales``: per modality, the rows'
    embeddings and inverse norms (the review scores unit rows)."""
    rows = np.flatnonzero((given >= 0) & joint.present.any(axis=1))
    present = joint.present[rows]
    zero_shot = joint_log_posterior(joint.terms[rows], present, free_weights)
    if rows.size != len(given):  # the usual batch reviews every row: no copy of its embeddings
        xs, scales = [x[rows] for x in xs], [scale[rows] for scale in scales]
    route, aware = review.judge(zero_shot, xs, scales, present, fold[rows])
    return Judged(rows, route, zero_shot, aware)


# empty or whitespace, Unicode's too (a no-break space), as Python's str.isspace sees it and class names are checked
BLANK = r"^[\s\v\x{85}\p{Z}]*$"


def given_labels(column: pa.Array) -> pa.Array:
    """The gold column as text; a blank value (empty or whitespace) is no label, as a null is
    (sql/check_gold_values.sql counts them alike)."""
    gold = column.cast(pa.string())
    return pc.if_else(pc.match_substring_regex(gold, BLANK), pa.scalar(None, pa.string()), gold)


def review_table(judged: Judged, route_name: str, keep_below: float, ids: pa.Array, given: np.ndarray,
                 joint: Joint, names: pa.Array, parent: Level | None = None) -> pa.Table:
    """review_items rows of the judged rows whose p_given is below ``keep_below`` (every row at 1). With a
    ``parent`` level, p_given_parent is the given label's parent's probability: its children's summed in the
    same posterior."""
    rows, route, zero_shot, aware = judged.rows, judged.route, judged.zero_shot, judged.aware
    if keep_below < 1:
        kept = route[np.arange(rows.size), given[rows]] < np.log(keep_below)
        rows, route, zero_shot = rows[kept], route[kept], zero_shot[kept]
        aware = None if aware is None else aware[kept]
    n, at = rows.size, (np.arange(rows.size), given[rows])
    return pa.table({
        "item_id": ids.take(pa.array(rows)),
        "given_label": names.take(pa.array(given[rows])),
        **verdicts(route, given[rows], joint.refined[rows], joint.present[rows], names, parent),
        "route": _repeat(route_name, n),
        "zero_shot_p_given": pa.array(np.exp(zero_shot[at])),
        "zero_shot_label": names.take(pa.array(zero_shot.argmax(axis=1))),
        "label_aware_p_given": pa.nulls(n, pa.float64()) if aware is None else pa.array(np.exp(aware[at])),
        "label_aware_label": pa.nulls(n, pa.string()) if aware is None else names.take(pa.array(aware.argmax(axis=1))),
        "neighbours_p_given": pa.nulls(n, pa.float64()),
        "neighbours_label": pa.nulls(n, pa.string()),
    }, schema=REVIEW_SCHEMA)


def verdicts(route: np.ndarray, given: np.ndarray, refined: np.ndarray, present: np.ndarray, names: pa.Array,
             parent: Level | None) -> dict[str, pa.Array]:
    """What a route's log posterior (n, K) says of the given labels: p_given, p_given_parent, the suggested
    label (the most likely other class) and how many modalities' refined labels (``refined``, ``present``:
    (n, modalities)) are that suggestion."""
    n = len(given)
    at = (np.arange(n), given)
    others = route.copy()
    others[at] = -np.inf
    suggested = others.argmax(axis=1)
    return {
        "suggested_label": names.take(pa.array(suggested)),
        "p_given": pa.array(np.exp(route[at])),
        # a sum of probabilities may pass 1 by rounding: at most 1
        "p_given_parent": pa.nulls(n, pa.float64()) if parent is None else pa.array(np.minimum(
            parent.probabilities(np.exp(route))[at[0], np.asarray(parent.index)[given]], 1.0)),
        "agreeing_modalities": agreeing_modalities(suggested, refined, present),
    }


def agreeing_modalities(suggested: np.ndarray, refined: np.ndarray, present: np.ndarray) -> pa.Array:
    """How many modalities' refined labels (``refined``, ``present``: (n, modalities)) are the suggestion."""
    return pa.array(((refined == suggested[:, None]) & present).sum(axis=1).astype(np.int32))


def parent_columns(parent: Level | None, posterior: np.ndarray,
                   power: np.ndarray | None = None) -> tuple[pa.Array, pa.Array]:
    """Each row's parent, the one whose children's probabilities in ``posterior`` (n, K) sum highest (the
    same posterior as the leaf label's, so both levels agree by construction), and its confidence: that sum,
    or with ``power`` (n,) (the model's ``ParentPowers`` of the row's fold) its calibrated probability
    (``hierarchy.sharpen``); at most 1 either way. Nulls when the classes have no parents."""
    n = len(posterior)
    if parent is None:
        return pa.nulls(n, pa.string()), pa.nulls(n, pa.float32())
    label, confidence = parent.labels(posterior, power)
    return pa.array(parent.names, pa.string()).take(pa.array(label)), pa.array(confidence.astype(np.float32))


def _scatter_rows(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    full = np.zeros((valid.size, *x.shape[1:]), x.dtype)
    full[valid] = x
    return full


def _nan_to_null(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float32(), mask=np.isnan(values))


def _repeat(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)  # 25x faster than a string array from an object array
