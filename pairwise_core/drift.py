"""Drift of a night's items against the model's fit sample (issue 21).

Two measures, each a ``DriftResult`` (metric, value, threshold, drifted), one row of ``drift_metrics``:

- ``embedding_drift``, per modality: a domain classifier. A logistic regression learns to tell the
  reference rows (the fit sample) from the current ones (what the night labelled); its out-of-fold
  ROC-AUC is the score. 0.5 means the two samples cannot be told apart; 1 means they never overlap.
  This is Evidently's default for embeddings ("model", threshold 0.55) and NannyML's domain classifier.
  The AUC reads as a share: when a share e of the night is new and fully separable and the rest matches,
  the AUC is at most 0.5 + e/2, so 0.55 asks for about a tenth of the night to be unlike the fit sample;
  a smaller novelty raises the value without flagging it.
  It is a solved problem, so the classifier, the folds and the AUC are scikit-learn's; this module only
  samples, scales and picks the threshold.
- ``class_share_shift``: the Jensen-Shannon distance (base 2, in [0, 1]) between the class shares of
  the reference labels and the night's labels, Evidently's default for a categorical column, with its
  threshold 0.1.

A fixed threshold alone false-alarms on a small night: the AUC of two small samples of one distribution
spreads around 0.5 by sqrt((n + m + 1) / (12 n m)) (Mann-Whitney), and the class shares of a few items
scatter around the reference's. So each threshold is the larger of the fixed one and the null
distribution's ``NULL_QUANTILE`` at the sample sizes at hand (as Evidently's bootstrap does for small
data): the normal approximation for the AUC, a seeded multinomial simulation of both sides for the shares. On large
samples the fixed threshold is the one that counts.

scikit-learn is the ``drift`` extra (``pip install 'pairwise[drift]'``); it is imported when a
drift is computed, with a one-line error if missing.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from statistics import NormalDist
from typing import Any

import numpy as np

from pairwise_core.validation import Interval, check_embeddings, check_labels, check_params

# Rows drawn (seeded) from each side, at most. At 5,000 a side the no-drift AUC spreads by 0.006
# (sqrt((n + m + 1) / 12 n m)), far inside the threshold's margin of 0.05, and one test of 384-d rows
# costs 1-2 s on a busy 2-core machine (bench/research_drift.py, docs/results.md#drift).
SAMPLE_ROWS = 5_000
# Evidently's default for its embeddings "model" method; NannyML's domain classifier also reads ROC-AUC.
AUC_THRESHOLD = 0.55
# Evidently's default threshold for the Jensen-Shannon distance of a categorical column (> 1000 rows).
SHARE_THRESHOLD = 0.1
# A threshold is at least this quantile of its no-drift distribution at the sample sizes given.
NULL_QUANTILE = 0.999
# Out-of-fold scores: every row is scored by a model that never saw it.
N_FOLDS = 5
# Fewer rows than this on a side and a drift score means little; the caller records no drift row.
MIN_ROWS = 50
# Draws of the class-share null distribution (K-dimensional multinomials: cheap).
_SHARE_DRAWS = 2_000
# The logistic regression's inverse L2 penalty (scikit-learn's default is 1). Strong: towards 0 its
# direction becomes the difference of the standardised means (a mean-shift test), and the fit converges
# in few steps. bench/research_drift.py, 5,000 rows a side, MiniLM nouns, a quarter of the
# classes removed: AUC title 0.545 / gloss 0.574 at C=1 (9-17 s a test), 0.559 / 0.585 at 1e-4 (1-2 s).
_PENALTY_C = 1e-4
_LOGISTIC_MAX_ITER = 1_000

AUC_METRIC = "domain_classifier_auc"
SHARE_METRIC = "class_share_js_distance"


@dataclass(frozen=True)
class DriftResult:
    """One row of ``drift_metrics`` without its run and modality.

    Attributes
    ----------
    metric : str
        What ``value`` is: ``AUC_METRIC`` or ``SHARE_METRIC``.
    value : float
        The score; larger means more drift.
    threshold : float
        The score above which the samples count as drifted, at these sample sizes.
    drifted : bool
        ``value > threshold``.
    """

    metric: str
    value: float
    threshold: float
    drifted: bool


def embedding_drift(reference: Any, current: Any, *, seed: int, sample_rows: int = SAMPLE_ROWS,
                    threshold: float = AUC_THRESHOLD) -> DriftResult:
    """The out-of-fold ROC-AUC of a classifier telling ``current`` rows from ``reference`` rows.

    Both sides are subsampled (seeded) to at most ``sample_rows`` rows and scaled to unit length (the
    method is cosine-based, so a row's norm is not its content). The classifier is a standardised
    logistic regression; ``N_FOLDS`` stratified folds give every row a score from a model that did not
    see it, and the AUC of those scores against the side is the value.

    Parameters
    ----------
    reference : array-like of shape (n, d)
        The model's fit sample, one modality.
    current : array-like of shape (m, d)
        The night's items, the same modality.
    seed : int
        Seeds the subsample, the folds and the classifier: one seed, one result.
    sample_rows : int
        Rows drawn from each side, at most.
    threshold : float
        The fixed AUC threshold; the one used is at least the no-drift ``NULL_QUANTILE``.

    Returns
    -------
    DriftResult
        metric ``AUC_METRIC``.

    Raises
    ------
    ValueError
        On fewer than ``MIN_ROWS`` rows on a side, NaN, Inf or all-zero rows, or different widths.
    """
    check_params({"seed": seed, "sample_rows": sample_rows, "threshold": threshold},
                 {"seed": Interval(Integral, 0, None), "sample_rows": Interval(Integral, MIN_ROWS, None),
                  "threshold": Interval(Real, 0.5, 1.0, closed="left")})
    ref = _sides(reference, "reference")
    cur = _sides(current, "current", n_features=ref.shape[1])
    rng = np.random.default_rng(seed)
    ref, cur = _subsample(ref, sample_rows, rng), _subsample(cur, sample_rows, rng)
    auc = _domain_auc(ref, cur, seed=seed)
    bound = 0.5 + _z(NULL_QUANTILE) * np.sqrt((len(ref) + len(cur) + 1) / (12 * len(ref) * len(cur)))
    used = max(threshold, float(bound))
    return DriftResult(AUC_METRIC, auc, used, auc > used)


def class_share_shift(reference_labels: Any, current_labels: Any, n_classes: int, *, seed: int,
                      threshold: float = SHARE_THRESHOLD) -> DriftResult:
    """The Jensen-Shannon distance between the class shares of two label samples.

    JS(p, q) = sqrt(1/2 KL(p || mix) + 1/2 KL(q || mix)), mix = (p + q) / 2, with base-2 logs: 0 for the
    same shares, 1 for shares with no class in common. Symmetric and finite when a class is absent
    on one side (unlike KL or PSI).

    Parameters
    ----------
    reference_labels : array-like of int, shape (n,)
        The labels of the model's fit sample, class ids in [0, n_classes).
    current_labels : array-like of int, shape (m,)
        The night's labels.
    n_classes : int
        The number of classes.
    seed : int
        Seeds the simulated no-drift distribution of the distance at m items.
    threshold : float
        The fixed threshold; the one used is at least the ``NULL_QUANTILE`` of the distance between two
        samples of n and m labels drawn from the pooled shares of both sides (no drift: one distribution).

    Returns
    -------
    DriftResult
        metric ``SHARE_METRIC``.

    Raises
    ------
    ValueError
        On fewer than ``MIN_ROWS`` labels on a side or a class id outside [0, n_classes).
    """
    check_params({"n_classes": n_classes, "seed": seed, "threshold": threshold},
                 {"n_classes": Interval(Integral, 1, None), "seed": Interval(Integral, 0, None),
                  "threshold": Interval(Real, 0.0, 1.0, closed="left")})
    ref = _label_side(reference_labels, "reference_labels", n_classes)
    cur = _label_side(current_labels, "current_labels", n_classes)
    ref_counts = np.bincount(ref, minlength=n_classes)
    cur_counts = np.bincount(cur, minlength=n_classes)
    p, q = ref_counts / ref.size, cur_counts / cur.size
    # The reference is a sample too (the fit sample's 5,000 labels): with hundreds of classes its shares are
    # as noisy as the night's, so the null draws both sides, n and m labels, from the pooled shares. Drawing
    # the night alone against p as if p were exact flagged 20 of 20 no-drift splits at K = 330
    # (taxonomy-nouns: JS 0.15-0.16 against a bound of 0.14).
    pooled = (ref_counts + cur_counts) / (ref.size + cur.size)
    rng = np.random.default_rng(seed)
    ref_draws = rng.multinomial(ref.size, pooled, size=_SHARE_DRAWS) / ref.size
    cur_draws = rng.multinomial(cur.size, pooled, size=_SHARE_DRAWS) / cur.size
    bound = float(np.quantile(js_distance(ref_draws, cur_draws), NULL_QUANTILE))
    value = float(js_distance(p, q))
    used = max(threshold, bound)
    return DriftResult(SHARE_METRIC, value, used, value > used)


def js_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Base-2 Jensen-Shannon distance between share vectors ``p`` and ``q`` along the last axis
    (broadcast: one ``p`` against many ``q`` rows)."""
    mix = (p + q) / 2
    divergence = (_kl(p, mix) + _kl(q, mix)) / 2
    return np.sqrt(np.maximum(divergence, 0.0))


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) in bits, 0 log 0 = 0; q > 0 wherever p > 0 (q is a mixture containing p)."""
    safe_p = np.where(p > 0, p, 1.0)
    safe_q = np.where(p > 0, q, 1.0)
    return np.sum(np.where(p > 0, p * np.log2(safe_p / safe_q), 0.0), axis=-1)


def _sides(x: Any, name: str, *, n_features: int | None = None) -> np.ndarray:
    """Checked rows, scaled to unit length."""
    arr = check_embeddings(x, name, n_features=n_features)
    if arr.shape[0] < MIN_ROWS:
        raise ValueError(f"{name} has {arr.shape[0]} rows; a drift test needs at least {MIN_ROWS}")
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def _label_side(y: Any, name: str, n_classes: int) -> np.ndarray:
    arr = check_labels(y, name)
    if arr.size < MIN_ROWS:
        raise ValueError(f"{name} has {arr.size} labels; a drift test needs at least {MIN_ROWS}")
    if arr.max() >= n_classes:
        raise ValueError(f"{name} has class id {int(arr.max())}, expected < n_classes={n_classes}")
    return arr


def _subsample(x: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``rows`` rows of ``x``, drawn without replacement, in their order."""
    if len(x) <= rows:
        return x
    return x[np.sort(rng.choice(len(x), size=rows, replace=False))]


def _z(quantile: float) -> float:
    return NormalDist().inv_cdf(quantile)


def import_learner() -> tuple[Any, ...]:
    """The domain classifier's parts of scikit-learn (an optional dependency, imported only when a drift test
    runs, or warmed up before one): LogisticRegression, roc_auc_score, StratifiedKFold, cross_val_predict,
    make_pipeline, StandardScaler. ImportError saying how to install it if it is missing."""
    try:
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import roc_auc_score
        from sklearn.model_selection import StratifiedKFold, cross_val_predict
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("the drift test needs scikit-learn: pip install 'pairwise[drift]'") from err
    return LogisticRegression, roc_auc_score, StratifiedKFold, cross_val_predict, make_pipeline, StandardScaler


def _domain_auc(reference: np.ndarray, current: np.ndarray, *, seed: int) -> float:
    """Out-of-fold ROC-AUC of a standardised, strongly penalised logistic regression, current = 1."""
    (LogisticRegression, roc_auc_score, StratifiedKFold,  # noqa: N806 - the classes' own names
     cross_val_predict, make_pipeline, StandardScaler) = import_learner()
    x = np.concatenate([reference, current])
    side = np.concatenate([np.zeros(len(reference), np.int8), np.ones(len(current), np.int8)])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=_PENALTY_C, max_iter=_LOGISTIC_MAX_ITER,
                                                              random_state=seed))
    folds = StratifiedKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    score = cross_val_predict(model, x, side, cv=folds, method="decision_function")
    return float(roc_auc_score(side, score))
