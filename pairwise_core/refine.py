"""Refinement by the catalog itself: a Gaussian mixture anchored to the pairwise labels (METHOD.md step 8).

The tourney decides each item against two class prompts; the catalog shows
where each class really lies. Per modality, a mixture with one mean direction
per class and one diagonal variance shared by all classes is fitted by EM,
starting from, and kept close to, the zero-shot anchor

    y0 = (1 - eps) * onehot(pairwise label) + eps * softmax(tau * cosines).

Every EM step needs only the soft-count sums N_k, S_k = sum z_ik x_i and
Q = sum_k Q_k = sum_i (sum_k z_ik) x_i^2 (``MixtureSums``): the shared variance
reads the classes' sums of squares only through their total, so no per-class
Q_k (a second K x n x d product) is taken. They add up exactly across chunks,
partitions and machines, like the pair statistics. The streaming protocol is
the classifier's: ``sums`` per chunk (map), ``merge_sums`` (reduce),
``finalize`` (the M-step); one such round per EM iteration.

The E-step's log-likelihood l_ik = x . (mu_k / var) - 1/2 sum_d mu_kd^2 / var_d
grows with 1 / var, that is with the dimension. The temperature is therefore
relative: T = temperature / mean_d(var_d), so that l / T is on the scale of a
cosine divided by ``temperature``, whatever the dimension.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from pairwise_core.pair_stats import normalize_rows
from pairwise_core.validation import Interval, check_embeddings, check_labels, check_params

_BLOCK_ROWS = 8192
_VAR_FLOOR = 0.01


@dataclass(frozen=True)
class MixtureSums:
    """Soft counts (K,), sums (K, d) and the membership-weighted sum of squares over all classes (d,), in
    float64: they merge by addition."""

    weight: np.ndarray
    sum: np.ndarray
    sumsq: np.ndarray

    @classmethod
    def zeros(cls, n_classes: int, n_features: int) -> MixtureSums:
        return cls(np.zeros(n_classes), np.zeros((n_classes, n_features)), np.zeros(n_features))

    def __add__(self, other: MixtureSums) -> MixtureSums:
        if self.sum.shape != other.sum.shape:
            raise ValueError(f"cannot merge mixture sums of shapes {self.sum.shape} and {other.sum.shape}")
        return MixtureSums(self.weight + other.weight, self.sum + other.sum, self.sumsq + other.sumsq)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Log softmax over the last axis (a row's classes), stable for large scores."""
    shifted = scores - scores.max(axis=-1, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=-1, keepdims=True))  # in place: the same bits, one array fewer
    return shifted


def log_anchor(cosines: np.ndarray, labels: np.ndarray, *, eps: float, tau: float) -> np.ndarray:
    """(n, K) log y0, y0 = (1 - eps) * onehot(labels) + eps * softmax(tau * cosines), in the cosines' dtype.

    Computed in log space, as log eps + log softmax(tau cos) for every class,
    with the label's share 1 - eps added by logaddexp. The log of y0 itself
    is -inf wherever a term underflows: in float32, softmax(tau cos) is 0 for
    a class about 100 nats below the top one (tau 1000 and a cosine gap of
    0.1), and eps * softmax is 0 for a tiny eps. One -inf in every class of
    an item whose modalities disagree makes its joint posterior NaN. In log
    space every entry is finite for eps in (0, 1] and a finite tau, and it
    equals log y0 to rounding where y0 does not underflow.
    """
    log_y0 = tau * cosines  # one (n, K) array, shifted and normalized in place
    log_y0 -= log_y0.max(axis=-1, keepdims=True)
    log_y0 -= np.log(np.exp(log_y0).sum(axis=-1, keepdims=True)) - math.log(eps)
    if eps < 1:  # at eps = 1 the label gets no share: log(1 - eps) would be -inf
        rows = np.arange(labels.shape[0])
        log_y0[rows, labels] = np.logaddexp(log_y0[rows, labels], math.log1p(-eps))
    return log_y0


class MixtureRefiner:
    """Per modality, the pairwise labels refined by a class mixture fitted on the catalog itself.

    The defaults were chosen on the tune halves of two real catalogs (WordNet
    nouns and verbs, MiniLM 384-d) and checked on their held-out halves and on
    the verbs embedded with mpnet (768-d): bench/research_refine.py, README.

    Parameters
    ----------
    class_embeddings : array (K, d)
        One prompt embedding per class (the classifier's).
    n_iter : int
        EM iterations (M-steps); the first starts from the anchor.
    temperature : float
        T relative to the mixture's scale: T = temperature / mean_d(var_d).
    anchor_weight : float
        lambda, the weight of log y0 in the E-step: how close the mixture stays to the zero-shot labels.
    eps : float
        Share of the anchor given to the cosine softmax rather than to the pairwise label.
    tau : float
        Sharpness of the cosine softmax in the anchor.

    Attributes
    ----------
    means_ : ndarray (K, d)
        Unit mean direction per class (a class with no weight keeps its prompt).
    var_ : ndarray (d,)
        The diagonal variance shared by all classes.
    n_iter_ : int
        M-steps done so far.
    """

    # Every accepted value keeps every log term finite (so no NaN reaches a posterior), and the bounds lie
    # far past the useful range (defaults 0.01, 1, 0.1 and 50):
    # - eps > 0: at eps = 0 the anchor is a hard one-hot, and an item whose modalities disagree has no class
    #   with a positive joint probability (0/0). Any positive eps is exact in log space (log_anchor): at the
    #   smallest positive double, log eps = -744.4.
    # - tau <= 1000: cosines lie in [-1, 1], so log softmax(tau cos) >= -2000 - log K; at 1000 a cosine gap
    #   of 0.01 is already 10 nats (CLIP's own logit scale is 100).
    # - anchor_weight <= 100: lambda * log y0 then stays above -3e5 - 100 log K; at 100 the anchor already
    #   pins the pairwise labels.
    # - temperature >= 1e-4: after the variance floor |l| * mean(var) is at most about 150 (unit rows), so
    #   |l / T| <= 1.5e6, far inside float32; below 1e-4 every posterior is one-hot to float precision. A large
    #   temperature only sends l / T to 0: the posterior becomes the anchor.
    _constraints = {
        "n_iter": Interval(Integral, 1, None),
        "temperature": Interval(Real, 1e-4, None),
        "anchor_weight": Interval(Real, 0, 100),
        "eps": Interval(Real, 0, 1, closed="right"),
        "tau": Interval(Real, 0, 1000),
    }

    def __init__(
        self,
        class_embeddings: Any,
        *,
        n_iter: int = 5,
        temperature: float = 0.01,
        anchor_weight: float = 1.0,
        eps: float = 0.1,
        tau: float = 50.0,
    ) -> None:
        self.class_embeddings = class_embeddings
        self.n_iter = n_iter
        self.temperature = temperature
        self.anchor_weight = anchor_weight
        self.eps = eps
        self.tau = tau

    def get_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._constraints}

    def _validate(self) -> None:
        check_params(self.get_params(), self._constraints)
        classes = check_embeddings(self.class_embeddings, "class_embeddings")
        self._class_unit = normalize_rows(classes.astype(np.float64))
        self.n_classes_, self.n_features_in_ = classes.shape

    def _reset(self) -> None:
        self._validate()
        self.n_iter_ = 0
        self._sums = MixtureSums.zeros(self.n_classes_, self.n_features_in_)
        for name in ("means_", "var_"):
            self.__dict__.pop(name, None)

    # -- streaming EM ------------------------------------------------------

    def sums(self, X: Any, labels: Any) -> MixtureSums:
        """The current E-step's sums over one chunk (map step): memberships are the anchor before the
        first M-step, the posterior after."""
        if not hasattr(self, "n_iter_"):
            self._reset()
        total = MixtureSums.zeros(self.n_classes_, self.n_features_in_)
        x, codes = self._check(X, labels)
        e_step = self._e_step(x.dtype) if hasattr(self, "means_") else None
        for unit, log_anchor in self._blocks(x, codes):
            total = total + self._block_sums(unit, log_anchor, _square_sums(unit), e_step)
        return total

    def merge_sums(self, sums: MixtureSums) -> MixtureRefiner:
        """Add sums computed elsewhere (reduce step); call finalize() after."""
        if not hasattr(self, "n_iter_"):
            self._reset()
        self._sums = self._sums + sums
        return self

    def partial_fit(self, X: Any, labels: Any) -> MixtureRefiner:
        """Accumulate this iteration's sums over a chunk; finalize() after the last chunk."""
        return self.merge_sums(self.sums(X, labels))

    def finalize(self) -> MixtureRefiner:
        """The M-step: class means and the shared variance from the accumulated sums; the sums restart."""
        if not hasattr(self, "n_iter_"):
            self._reset()
        sums = self._sums
        norms = np.linalg.norm(sums.sum, axis=1)
        empty = norms == 0
        means = np.where(empty[:, None], self._class_unit, sums.sum / np.where(empty, 1.0, norms)[:, None])
        total = sums.weight.sum()
        if total > 0:
            var = (sums.sumsq - (2 * means * sums.sum - sums.weight[:, None] * means * means).sum(axis=0)) / total
        else:
            var = np.full(self.n_features_in_, 1.0 / self.n_features_in_)
        # a dimension with (almost) no spread would get a huge weight from noise in the means (MiniLM has
        # two constant dimensions): floor the variance at a share of the mean (and above zero: unit rows
        # spread about 1/d per dimension, so 1e-12 is no spread at all)
        self.var_ = np.maximum(var, max(_VAR_FLOOR * float(var.mean()), 1e-12))
        self.means_ = means
        self.n_iter_ += 1
        self._sums = MixtureSums.zeros(self.n_classes_, self.n_features_in_)
        return self

    def fit(self, X: Any, labels: Any) -> MixtureRefiner:
        """All ``n_iter`` EM iterations over ``X`` held in memory (normalized and anchored once)."""
        self._reset()
        x, codes = self._check(X, labels)
        blocks = [(unit, log_anchor, _square_sums(unit)) for unit, log_anchor in self._blocks(x, codes)]
        for _ in range(self.n_iter):
            e_step = self._e_step(x.dtype) if hasattr(self, "means_") else None
            for unit, log_anchor, square_sums in blocks:
                self._sums = self._sums + self._block_sums(unit, log_anchor, square_sums, e_step)
            self.finalize()
        return self

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The fitted mixture as plain arrays and JSON-able parameters (``from_arrays``); the sums of an
        unfinished iteration are not part of it."""
        self._check_fitted()
        return ({"class_embeddings": np.asarray(self.class_embeddings), "means": self.means_, "var": self.var_},
                {"params": self.get_params(), "iterations": self.n_iter_})

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> MixtureRefiner:
        """A fitted refiner with the same log terms as the one ``to_arrays`` was called on."""
        refiner = cls(arrays["class_embeddings"], **state["params"])
        refiner._reset()
        refiner.means_, refiner.var_, refiner.n_iter_ = arrays["means"], arrays["var"], state["iterations"]
        return refiner

    # -- posterior ---------------------------------------------------------

    def log_terms(self, X: Any, labels: Any) -> np.ndarray:
        """(n, K): lambda * log y0 + l / T, the item's unnormalized log posterior in this modality, in the
        items' dtype (float32 items: float32, half the memory at many classes).

        Summed over an item's modalities, they give its joint posterior.
        """
        self._check_fitted()
        x, codes = self._check(X, labels)
        e_step = self._e_step(x.dtype)
        parts = [self._log_terms(unit, log_anchor, e_step) for unit, log_anchor in self._blocks(x, codes)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def directions(self, dtype: Any) -> np.ndarray:
        """(K, d): the E-step's weights as rows, in ``dtype``. A classifier scoring the same rows takes their
        products in its own matrix product (``PairwiseClassifier.classify(..., directions=...)``), and
        ``log_terms_of`` finishes the terms from them: the rows are not read, normalized and multiplied again."""
        self._check_fitted()
        return np.ascontiguousarray(self._e_step(dtype)[0].T)

    def log_terms_of(self, products: np.ndarray, cosines: np.ndarray, labels: Any) -> np.ndarray:
        """``log_terms`` of rows from what one product over them gave: ``products`` (n, K), the unit rows'
        products with ``directions``; ``cosines`` (n, K), their cosines to the class embeddings (the
        classifier's, whose class embeddings these are). Equal to ``log_terms`` up to rounding."""
        self._check_fitted()
        n = len(products)
        codes = self._codes(labels, n)
        for name, array in (("products", products), ("cosines", cosines)):
            if np.shape(array) != (n, self.n_classes_):
                raise ValueError(f"{name} must be of shape {(n, self.n_classes_)}, got {np.shape(array)}")
        offsets = self._e_step(products.dtype)[1]
        return self._finish(products - offsets, log_anchor(np.asarray(cosines, products.dtype), codes, eps=self.eps,
                                                           tau=self.tau))

    def predict_proba(self, X: Any, labels: Any) -> np.ndarray:
        """(n, K) posterior over classes in this modality."""
        return _softmax_in_place(self.log_terms(X, labels))

    def _check_fitted(self) -> None:
        if not hasattr(self, "means_"):
            raise ValueError("MixtureRefiner is not fitted: call fit(), or partial_fit() then finalize()")

    def _check(self, X: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
        x = check_embeddings(X, "X", n_features=self.n_features_in_)
        return x, self._codes(labels, x.shape[0])

    def _codes(self, labels: Any, n: int) -> np.ndarray:
        """``labels`` as n class indices of this mixture, or ValueError."""
        codes = check_labels(labels, "labels")
        if codes.shape != (n,) or (codes.size and codes.max() >= self.n_classes_):
            raise ValueError(f"labels must be {n} class indices below {self.n_classes_}")
        return codes

    def _blocks(self, x: np.ndarray, labels: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Per block of rows: the unit rows and log y0, in the items' dtype (float32 stays float32)."""
        classes = self._class_unit.T.astype(x.dtype)
        for start in range(0, x.shape[0], _BLOCK_ROWS):
            rows = slice(start, start + _BLOCK_ROWS)
            unit = normalize_rows(x[rows])
            yield unit, log_anchor(unit @ classes, labels[rows], eps=self.eps, tau=self.tau)

    def _block_sums(self, unit: np.ndarray, log_anchor: np.ndarray, square_sums: np.ndarray,
                    e_step: tuple[np.ndarray, np.ndarray] | None) -> MixtureSums:
        """One block's N, S and Q: products in the items' dtype, added up in float64. Memberships are the
        anchor before the first M-step (``e_step`` None), the posterior after.

        Each row's memberships sum to 1 (the anchor's and the posterior's alike), so Q = sum_i (sum_k z_ik)
        x_i^2 is the block's plain sum of squares, ``square_sums``: the same every iteration.
        """
        z = np.exp(log_anchor) if e_step is None else _softmax_in_place(self._log_terms(unit, log_anchor, e_step))
        return MixtureSums(z.sum(axis=0, dtype=np.float64), (z.T @ unit).astype(np.float64), square_sums)

    def _e_step(self, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
        """l / T as a product: (d, K) weights mu_k / (var T) and (K,) offsets 1/2 sum_d mu_kd^2 / (var_d T), in
        ``dtype`` (the items'), so that l_ik / T = x_i . w_k - b_k."""
        weights = self.means_ / self.var_
        scale = self.var_.mean() / self.temperature  # 1 / T
        offsets = 0.5 * scale * np.einsum("kd,kd->k", self.means_, weights)
        return (weights.T * scale).astype(dtype), offsets.astype(dtype)

    def _log_terms(self, unit: np.ndarray, log_anchor: np.ndarray, e_step: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """lambda * log y0 + l / T of a block, in the items' dtype: one product and two passes in place."""
        weights, offsets = e_step
        terms = unit @ weights
        terms -= offsets
        return self._finish(terms, log_anchor)

    def _finish(self, terms: np.ndarray, log_anchor: np.ndarray) -> np.ndarray:
        """l / T (``terms``, overwritten) plus lambda * log y0."""
        if self.anchor_weight == 1:
            terms += log_anchor
        elif self.anchor_weight != 0:
            terms += self.anchor_weight * log_anchor
        return terms


# A mixture can collapse: a few classes' mean directions drift towards where the weakly expressed items lie
# and take them, each growing to many times its pairwise count (hubs), and the refined labels fall far below
# the pairwise ones. Seen on the synthetic generator's catalogs from about 100 classes on (`pairwise demo
# --n-classes 100`, 20,000 items: image refined 0.388 against pairwise 0.759, 55% of the items in classes
# that had swollen), never on the real ones (WordNet nouns and verbs, 13 and 24 classes, and the taxonomy
# catalogs, 330 and 345: no class swelled). A fit whose refined labels put more than COLLAPSED of the items in
# classes holding over SWELL times both their pairwise count and an even share is done again at twice the
# temperature (a smoother E-step, nearer the anchor; at four times the refined labels are the pairwise ones on
# those catalogs), at most MAX_DOUBLINGS times.
SWELL = 3.0
COLLAPSED = 0.05
MAX_DOUBLINGS = 3


def swollen_share(refined: np.ndarray, anchor: np.ndarray, n_classes: int) -> float:
    """The share of items whose refined class holds over SWELL times its count among the ``anchor`` (pairwise)
    labels and over SWELL times an even share of the items."""
    if refined.size == 0:
        return 0.0
    counts = np.bincount(refined, minlength=n_classes)
    swollen = (counts > SWELL * np.bincount(anchor, minlength=n_classes)) & (counts > SWELL * refined.size / n_classes)
    return float(counts[swollen].sum() / refined.size)


def fit_without_collapse(class_embeddings: Any, X: Any, labels: Any,
                         **params: Any) -> tuple[MixtureRefiner, list[float]]:
    """A ``MixtureRefiner(class_embeddings, **params)`` fitted on ``X`` anchored to ``labels``, its temperature
    doubled while its refined labels of ``X`` have collapsed (``swollen_share`` above COLLAPSED); and the
    swollen share of each fit, for the run's log. A fit that did not collapse is returned as it is."""
    codes, shares = np.asarray(labels), []
    while True:
        refiner = MixtureRefiner(class_embeddings, **params).fit(X, codes)
        shares.append(swollen_share(refiner.log_terms(X, codes).argmax(axis=1), codes, refiner.n_classes_))
        if shares[-1] <= COLLAPSED or len(shares) > MAX_DOUBLINGS:
            return refiner, shares
        params = {**refiner.get_params(), "temperature": 2 * refiner.temperature}


def _square_sums(unit: np.ndarray) -> np.ndarray:
    """(d,) sum over a block's rows of x^2, in float64."""
    return np.einsum("ij,ij->j", unit, unit, dtype=np.float64)


def _softmax_in_place(scores: np.ndarray) -> np.ndarray:
    """The softmax over each row of ``scores``, written over them: one exp per entry, no temporary."""
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores

