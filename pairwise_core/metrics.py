"""Agreement and accuracy metrics, exact, from a confusion matrix.

Agreement between two modalities is not accuracy: a method that puts every
item in one class agrees perfectly. Report the class distribution beside it,
and gold accuracy when gold labels exist (METHOD.md step 7).
"""

from __future__ import annotations

import numpy as np

from pairwise_core.validation import check_labels


def _pair(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = check_labels(y_true, "y_true")
    p = check_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"label arrays differ in length: {t.size} and {p.size}")
    if t.size == 0:
        raise ValueError("label arrays are empty")
    return t, p


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """C[i, j] = number of items with true class i and predicted class j."""
    t, p = _pair(y_true, y_pred)
    k = max(int(t.max()), int(p.max())) + 1 if n_classes is None else n_classes
    if t.max() >= k or p.max() >= k:
        raise ValueError(f"class ids must be < n_classes={k}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of items whose predicted class equals the true class."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def f1_weighted(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Per-class F1, averaged with weights = support in ``y_true``.

    F1 of a class with no predictions (or no true items) is 0, as in
    scikit-learn's ``f1_score(average="weighted", zero_division=0)``.
    """
    cm = confusion_matrix(y_true, y_pred).astype(np.float64)
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denominator = support + predicted
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return float(np.sum(f1 * support) / support.sum())


def agreement_f1(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """The original's headline: weighted F1 of modality a's labels against modality b's."""
    return f1_weighted(labels_b, labels_a)


def cohen_kappa(labels_a: np.ndarray, labels_b: np.ndarray) -> float:
    """Agreement corrected for chance: (p_o - p_e) / (1 - p_e); 1.0 when p_e = 1."""
    cm = confusion_matrix(labels_a, labels_b).astype(np.float64)
    n = cm.sum()
    observed = np.trace(cm) / n
    expected = float(cm.sum(axis=1) @ cm.sum(axis=0)) / (n * n)
    if expected == 1.0:
        return 1.0
    return float((observed - expected) / (1.0 - expected))


def class_shares(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Share of items per class: the distribution to report beside agreement."""
    y = check_labels(labels, "labels")
    return np.bincount(y, minlength=n_classes) / max(y.size, 1)


def calibration_bins(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """(n_bins, 3) sums per equal-width confidence bin: items, confidence, correct ones.

    Sums, so bins of partitions add up; ``expected_calibration_error`` reads them.
    A confidence of exactly 1 falls in the last bin.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    hit = np.asarray(correct, dtype=np.float64)
    if conf.shape != hit.shape or conf.ndim != 1:
        raise ValueError(f"correct and confidence must be 1-D of one length, got {hit.shape} and {conf.shape}")
    if conf.size and (np.isnan(conf).any() or conf.min() < 0 or conf.max() > 1):
        raise ValueError("confidence must lie in [0, 1]")
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    return np.stack([np.bincount(bins, weights=w, minlength=n_bins) for w in (np.ones_like(conf), conf, hit)], axis=1)


def expected_calibration_error(correct: np.ndarray, confidence: np.ndarray, n_bins: int = 10) -> float:
    """ECE: sum over equal-width bins of |accuracy - mean confidence|, weighted by the bin's share of items.

    A user who auto-accepts every item above a threshold relies on it: of the
    items given confidence p, a share p should be right.
    """
    sums = calibration_bins(correct, confidence, n_bins)
    n = sums[:, 0].sum()
    if n == 0:
        raise ValueError("no items to measure calibration on")
    return float(np.abs(sums[:, 1] - sums[:, 2]).sum() / n)
