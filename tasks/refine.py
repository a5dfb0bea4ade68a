"""After pass 1: fit the refinement and its calibration on the seeded sample, for the labelling pass to apply."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from prefect import task

from pairwise_core import MixtureRefiner
from pairwise_core.refine import fit_without_collapse
from pairwise_core.drift import SAMPLE_ROWS
from pairwise_core.hierarchy import Level, ParentPowers, fit_power
from pairwise_core.joint import FIT_CLASSES, cross_view_weights, fit_weights, joint_log_posterior, prune_classes
from pairwise_core.model import Classifiers, DriftReference, Refinement
from pairwise_core.refine import log_softmax
from tasks.policy import IO_TASK
from tasks.sample import N_FOLDS, Sample, load_sample
from tasks.sources import Plan
from tasks.models import load_part, save_part

# fewer labelled rows than this in a fold's complement: no label-aware calibration (the weights would be noise)
MIN_CALIBRATION_ROWS = 200
# A few weights need few rows: the calibration reads at most this many of the sample's (seeded), which at
# K = 500 keeps it to seconds instead of a minute.
CALIBRATION_ROWS = 5_000


def pairwise_labels(model: Any, sample: Sample, modality: str) -> np.ndarray:
    """One modality's pairwise label of each of the sample's rows (-1 where the modality was rejected): the
    tourney once per fit, whatever it is read for."""
    valid = sample.valid[modality]
    labels = np.full(sample.n_rows, -1, np.int64)
    if valid.any():
        labels[valid] = model.predict(sample.x[modality][valid])
    return labels


def save_labels(path: Path, labels: dict[str, np.ndarray]) -> str:
    """Write the sample's pairwise labels (``pairwise_labels``) for the review's fit, which reads the same
    sample: one tourney over it per run (at K = 500 a second one was a fifth of the review's fit)."""
    with path.open("wb") as handle:
        np.savez(handle, *labels.values())
    return str(path)


def load_labels(path: str, modalities: list[str]) -> dict[str, np.ndarray]:
    """The labels ``save_labels`` wrote, by modality."""
    with np.load(path, allow_pickle=False) as arrays:
        return {m: arrays[f"arr_{i}"] for i, m in enumerate(modalities)}


def sample_terms(refiners: dict[str, MixtureRefiner], labels: dict[str, np.ndarray], sample: Sample) -> np.ndarray:
    """(rows, modalities, K) log terms of the sample's rows (zero where a modality was rejected), from their
    pairwise ``labels`` (``pairwise_labels``)."""
    k = next(iter(refiners.values())).n_classes_
    terms = np.zeros((sample.n_rows, len(refiners), k), np.float32)
    for v, (modality, refiner) in enumerate(refiners.items()):
        valid = sample.valid[modality]
        if valid.any():
            terms[valid, v] = refiner.log_terms(sample.x[modality][valid], labels[modality][valid])
    return terms


def calibration_weights(terms: np.ndarray, present: np.ndarray, fold: np.ndarray, gold: np.ndarray,
                        n_classes: int) -> tuple[np.ndarray, np.ndarray, str]:
    """(view weights, joint weights, how), per fold: fitted out of fold on the labelled rows when there
    are enough of them, else label-free from how the modalities predict each other. ``terms`` may hold each
    row's top classes only (``prune_classes``; ``gold`` then the label's position among them) of
    ``n_classes``."""
    labelled = gold >= 0
    if not all((labelled & (fold != f)).sum() >= MIN_CALIBRATION_ROWS for f in range(N_FOLDS)):
        own, together = cross_view_weights(terms, present, n_classes)
        return np.tile(own, (N_FOLDS, 1)), np.tile(together, (N_FOLDS, 1)), "label-free"
    n_views = terms.shape[1]
    view, joint = np.zeros((N_FOLDS, n_views)), np.zeros((N_FOLDS, n_views))
    for f in range(N_FOLDS):
        rows = labelled & (fold != f)
        joint[f] = fit_weights(terms[rows], present[rows], gold[rows])
        for v in range(n_views):
            own = rows & present[:, v]
            view[f, v] = fit_weights(terms[own][:, [v]], present[own][:, [v]], gold[own])[0] if own.any() else 1.0
    return view, joint, "gold"


def parent_powers(terms: np.ndarray, present: np.ndarray, fold: np.ndarray, gold: np.ndarray, view: np.ndarray,
                  joint: np.ndarray, level: Level) -> ParentPowers:
    """The parent confidence's powers (``hierarchy.sharpen``), per fold: fitted on the other folds' labelled
    rows by the likelihood of their gold class's parent, as the leaf weights of the same fold (``view``,
    ``joint``: ``calibration_weights``' 'gold' ones) give their parents, per modality and jointly. ``terms``:
    the rows' full log terms (rows, modalities, K); ``gold``: their class, -1 where unknown.

    Fold f's powers, like its weights, never read fold f's labels: the rows they are fitted on are scored
    by fold f's own weights (fitted on the same rows), not by their own folds', which read fold f's.
    """
    parent_gold = np.where(gold >= 0, np.asarray(level.index)[np.maximum(gold, 0)], -1)
    n_views = terms.shape[1]
    view_powers, joint_powers = np.ones((N_FOLDS, n_views)), np.ones(N_FOLDS)
    for f in range(N_FOLDS):
        rows = (parent_gold >= 0) & (fold != f)
        for v in range(n_views):
            own = np.flatnonzero(rows & present[:, v])
            log_p = log_softmax(view[f, v] * terms[own, v].astype(np.float64))
            view_powers[f, v] = fit_power(level.log_probabilities(log_p), parent_gold[own])
        some = np.flatnonzero(rows & (present.sum(axis=1) > 1))  # an item with one modality takes its own power
        log_p = joint_log_posterior(terms[some], present[some], joint[f])
        joint_powers[f] = fit_power(level.log_probabilities(log_p), parent_gold[some])
    return ParentPowers(level, view_powers, joint_powers)


def drift_reference(sample: Sample, terms: np.ndarray, present: np.ndarray, joint_weights: np.ndarray,
                    seed: int) -> DriftReference:
    """The baseline of the nightly drift tests: at most ``SAMPLE_ROWS`` seeded rows of the sample, their
    usable embeddings per modality and their joint labels under the fold's weights, as the labelling pass
    gives them. ``terms`` and ``present`` are the rows' (the calibration computed them): no extra pass."""
    rows = np.sort(np.random.default_rng(seed).permutation(sample.n_rows)[:SAMPLE_ROWS])
    labelled = rows[present[rows].any(axis=1)]
    log_p = joint_log_posterior(terms[labelled], present[labelled], joint_weights[sample.fold[labelled]])
    x = {m: sample.x[m][rows][sample.valid[m][rows]] for m in sample.x}
    return DriftReference(x, log_p.argmax(axis=1).astype(np.int64))


@task(name="fit-refinement", **IO_TASK)
def fit_refinement(
    sample_paths: list[str], plan: Plan, model_dir: str, refine_params: dict[str, Any], label_aware: bool,
    seed: int, labels_path: str,
) -> dict[str, Any]:
    """Per modality, the mixture anchored to the sample's pairwise labels; then the confidence weights, and
    with a parent level and 'gold' calibration the parent confidence's powers (``parent_powers``).

    Writes the parts ``refinement`` and ``drift_reference`` of the model in ``model_dir``, and the sample's
    pairwise labels to ``labels_path`` (``save_labels``); returns how it was calibrated ("calibration") and
    each modality's mixture temperature and swollen share per fit ("fits": ``fit_without_collapse``).
    """
    classifiers: Classifiers = load_part(model_dir, "classifiers")
    models = classifiers.models
    sample = load_sample(sample_paths, plan.modalities)

    def fit_modality(modality: str) -> tuple[np.ndarray, MixtureRefiner, list[float]]:
        labels = pairwise_labels(models[modality], sample, modality)
        valid = sample.valid[modality]
        if valid.any():
            refiner, swollen = fit_without_collapse(models[modality].class_embeddings, sample.x[modality][valid],
                                                    labels[valid], **refine_params)
        else:  # nothing to learn from: the classes stay at their prompts
            refiner, swollen = MixtureRefiner(models[modality].class_embeddings, **refine_params).finalize(), []
        return labels, refiner, swollen

    # the modalities' tourneys and mixtures are independent, each on a thread of its own (numpy lets the GIL
    # go in their products): the same model as one after the other, on as many cores as modalities
    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        fitted = dict(zip(models, pool.map(fit_modality, models), strict=True))
    labels = {modality: fitted[modality][0] for modality in models}
    refiners = {modality: fitted[modality][1] for modality in models}
    fits = {modality: {"temperature": refiners[modality].temperature, "swollen_shares": fitted[modality][2]}
            for modality in models}
    save_labels(Path(labels_path), labels)
    rows = np.sort(np.random.default_rng(seed).permutation(sample.n_rows)[:CALIBRATION_ROWS])
    sample = sample.rows(rows)
    present = np.stack([sample.valid[m] for m in plan.modalities], axis=1)
    gold = sample.gold if label_aware else np.full(sample.n_rows, -1)
    terms = sample_terms(refiners, {m: labels[m][rows] for m in labels}, sample)
    k = terms.shape[2]
    pruned, _, at = prune_classes(terms, present, FIT_CLASSES, gold)
    view, joint, how = calibration_weights(pruned, present, sample.fold, at, k)
    free = joint[0] if how == "label-free" else cross_view_weights(pruned, present, k)[1]
    # the parent confidence: calibrated against the gold labels' parents as the leaves are; label-free, the sum
    powers = parent_powers(terms, present, sample.fold, gold, view, joint, plan.parent) \
        if how == "gold" and plan.parent is not None else None
    save_part(Path(model_dir), "refinement", Refinement(refiners, view, joint, how, free, powers))
    save_part(Path(model_dir), "drift_reference", drift_reference(sample, terms, present, joint, seed))
    return {"calibration": how, "fits": fits}
