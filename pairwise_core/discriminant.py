"""Label-aware evidence: an out-of-fold linear discriminant on the catalog's given labels (METHOD.md step 9).

Items fall into F folds (by a hash of item_id in the pipeline). Every item is
scored by the model fitted without its fold, so the model never saw the
label it judges. The model is Gaussian with one covariance shared by the
classes (LDA):

    log p(k | x) = x . Sigma^-1 mu_k - 1/2 mu_k . Sigma^-1 mu_k + log pi_k  (+ const),

on the concatenation of the item's modalities, each scaled to unit length by
the caller (as cosine scoring sees them; it also keeps the polish's logistic
loss well conditioned). Its inputs are sums, so they stream and merge:

- ``ClassSums``: per fold and class, the count and the sum of x, over every
  item (one pass; the class means and priors);
- ``Scatter``: per fold, the sum of x x^T and the class counts and sums,
  over a seeded sample of items (d x d per item is about 1.2 TFLOP per 768-d
  modality at 1M items; a sample of some thousand rows per fold estimates
  the same shared covariance).

The covariance is shrunk towards its mean variance,
Sigma_a = (1 - a) W + a tr(W)/d I, and the shrinkage a and a temperature
on the logits are chosen by the likelihood of one fold's sample labels under
the model of the other folds. Then a few L-BFGS steps of the logistic loss,
started from the LDA solution and held near it, correct it where the
embeddings are not Gaussian (``polish``). An item with a modality missing is scored by the marginal of
the same Gaussian over the modalities it has (the sub-blocks of Sigma and mu).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from pairwise_core.refine import log_softmax

# the shrinkage and temperature grids the out-of-fold likelihood chooses from
SHRINKAGES = (0.01, 0.03, 0.1, 0.3, 0.6)
TEMPERATURES = tuple(np.geomspace(0.25, 32.0, 29))
_BLOCK_ROWS = 4096
# up to this many (fold, class) groups in a batch, class sums are one product with a one-hot matrix
# (1M x 768-d, 65 groups: 0.9 s against 4.7 s for a float64 segmented sum); beyond, a segmented sum
_ONE_HOT_GROUPS = 128
# The discriminative polish: L-BFGS steps on the logistic loss from the LDA solution, its penalty towards
# that solution, the rows it reads per fold (evenly spread over the sample), and its budget in rows x
# dimensions x classes (above it, at hundreds of classes, it is skipped). Chosen on the dev catalogs
# (bench/research_review.py): 8,000 rows gave the precision@k of all of them, and 5 steps that of 10
# (nouns 0.807 both, verbs 0.565 against 0.567), at a fraction of the cost.
POLISH_STEPS = 5
POLISH_PENALTY = 1e-3
POLISH_ROWS = 8_000
POLISH_BUDGET = POLISH_ROWS * 1536 * 32
_LBFGS_MEMORY = 10
# a step not found within these halvings ends the polish: on a nearly separable catalog (the synthetic
# one) no step from the LDA solution lowered the loss, and 30 halvings cost 30 products per fold
_LINE_SEARCH_HALVINGS = 8


@dataclass(frozen=True)
class ClassSums:
    """One modality's per fold and class item counts (F, K) and sums of x (F, K, d), float64."""

    count: np.ndarray
    total: np.ndarray

    @classmethod
    def zeros(cls, n_folds: int, n_classes: int, n_features: int) -> ClassSums:
        return cls(np.zeros((n_folds, n_classes)), np.zeros((n_folds, n_classes, n_features)))

    @classmethod
    def of(cls, x: np.ndarray, labels: np.ndarray, fold: np.ndarray, n_folds: int, n_classes: int,
           scale: np.ndarray | None = None) -> ClassSums:
        """The sums of rows ``x`` (n, d), each times its ``scale`` (n,; e.g. its inverse norm, which sums
        unit rows without a scaled copy of the batch), with ``labels`` (n,; -1 for none) and ``fold`` (n,),
        with no loop over items: a product with the rows' (scaled) one-hot group matrix while the groups
        present are few (one BLAS call), else a sort and a segmented sum. Each call's sums are in the rows'
        dtype (a batch); they accumulate across calls in float64."""
        sums = cls.zeros(n_folds, n_classes, x.shape[1])
        known = labels >= 0
        every = known.all()
        rows = x if every else x[known]
        weight = None if scale is None else (scale if every else scale[known]).astype(rows.dtype, copy=False)
        groups, member = np.unique(fold[known] * n_classes + labels[known], return_inverse=True)
        if groups.size == 0:
            return sums
        if groups.size <= _ONE_HOT_GROUPS:
            onehot = np.zeros((groups.size, member.size), rows.dtype)
            onehot[member, np.arange(member.size)] = 1 if weight is None else weight
            totals = onehot @ rows
        else:
            order = np.argsort(member, kind="stable")
            picked = rows[order] if weight is None else rows[order] * weight[order, None]
            totals = np.add.reduceat(picked, np.searchsorted(member[order], np.arange(groups.size)), axis=0)
        sums.total.reshape(n_folds * n_classes, -1)[groups] = totals
        sums.count.reshape(-1)[groups] = np.bincount(member, minlength=groups.size)
        return sums

    def __add__(self, other: ClassSums) -> ClassSums:
        return ClassSums(self.count + other.count, self.total + other.total)


@dataclass(frozen=True)
class Scatter:
    """Per fold: sum of x x^T (F, D, D), and the class counts (F, K) and sums (F, K, D) of the same rows."""

    outer: np.ndarray
    count: np.ndarray
    total: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, labels: np.ndarray, fold: np.ndarray, n_folds: int, n_classes: int) -> Scatter:
        """Of complete rows ``x`` (n, D) with known ``labels``: float32 products in blocks, float64 sums."""
        d = x.shape[1]
        outer = np.zeros((n_folds, d, d))
        for f in range(n_folds):
            rows = x[fold == f]
            for start in range(0, len(rows), _BLOCK_ROWS):
                block = rows[start : start + _BLOCK_ROWS]
                outer[f] += block.T @ block
        sums = ClassSums.of(x, labels, fold, n_folds, n_classes)
        return cls(outer, sums.count, sums.total)

    def within(self, folds: np.ndarray) -> np.ndarray:
        """The pooled within-class covariance of the rows of ``folds`` (a boolean mask over the folds)."""
        outer = np.tensordot(folds.astype(self.outer.dtype), self.outer, axes=1)  # no copy of the folds' blocks
        count = self.count[folds].sum(axis=0)
        total = self.total[folds].sum(axis=0)
        seen = count > 0
        centred = outer - (total[seen].T / count[seen]) @ total[seen]
        return centred / max(count.sum() - seen.sum(), 1.0)


class FoldDiscriminant:
    """The fitted out-of-fold discriminant.

    For fold f and each set of present modalities it keeps one coefficient
    block (d_m, K) per modality and the intercepts (K,), so a row is scored
    by one product per modality without concatenating its embeddings.
    """

    def __init__(self, class_sums: list[ClassSums], scatter: Scatter, sample_x: np.ndarray,
                 sample_labels: np.ndarray, sample_fold: np.ndarray, *,
                 shrinkages: tuple[float, ...] = SHRINKAGES, temperatures: tuple[float, ...] = TEMPERATURES,
                 polish_steps: int = POLISH_STEPS) -> None:
        """Fit from one ``ClassSums`` per modality and the ``Scatter`` of complete sample rows (modalities
        concatenated in the same order); choose shrinkage and temperature from the grids on one fold of
        those rows (``sample_x``, labelled), scored by the model of the other folds. Then, within the budget,
        polish each fold's model of complete rows by ``polish_steps`` of L-BFGS on the other folds' rows."""
        dims = [s.total.shape[2] for s in class_sums]
        self.n_folds, self.n_classes = class_sums[0].count.shape
        offsets = np.concatenate([[0], np.cumsum(dims)])
        self._blocks = [np.arange(offsets[m], offsets[m + 1]) for m in range(len(dims))]
        self._means, self._log_prior, self._covariances = [], [], []
        for f in range(self.n_folds):
            others = np.arange(self.n_folds) != f
            counts = [s.count[others].sum(axis=0) for s in class_sums]  # per modality (K,)
            self._means.append(np.concatenate([
                s.total[others].sum(axis=0) / np.maximum(c, 1.0)[:, None] for s, c in zip(class_sums, counts)
            ], axis=1))
            items = np.max(counts, axis=0)
            self._log_prior.append(np.log(np.maximum(items, 0.5) / max(items.sum(), 1.0)))
            self._covariances.append(scatter.within(others))
        self.shrinkage, self.temperature = self._choose(sample_x, sample_labels, sample_fold, shrinkages,
                                                        temperatures)
        within_budget = POLISH_ROWS * sample_x.shape[1] * self.n_classes <= POLISH_BUDGET
        self.polish_steps = polish_steps if within_budget else 0
        self._coef: dict[tuple[int, tuple[int, ...]], tuple[list[np.ndarray], np.ndarray]] = {}
        for f in range(self.n_folds):
            for size in range(1, len(dims) + 1):
                for modalities in combinations(range(len(dims)), size):
                    coef, intercept = self._solve(f, modalities, self.shrinkage)
                    coef, intercept = coef / self.temperature, intercept / self.temperature
                    if len(modalities) == len(dims) and self.polish_steps:
                        rows = np.flatnonzero(sample_fold != f)
                        rows = rows[np.linspace(0, rows.size - 1, min(rows.size, POLISH_ROWS)).astype(np.int64)]
                        coef, intercept = polish(coef, intercept, sample_x[rows], sample_labels[rows],
                                                 self.polish_steps)
                    splits = np.cumsum([dims[m] for m in modalities])[:-1]
                    # scored in float32, the embeddings' dtype: a float64 product would convert every row
                    self._coef[f, modalities] = ([block.astype(np.float32) for block in np.split(coef, splits)],
                                                 intercept)
        # the fit's d x d covariances (about 90 MB at 2 x 768-d) are not needed to score
        del self._means, self._log_prior, self._covariances

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The fitted coefficients as plain arrays (``coef/<fold>/<modalities>/<i>``: the block of the i-th
        of those modalities, and ``intercept/<fold>/<modalities>``), with the chosen scalars (``from_arrays``)."""
        arrays = {}
        for (f, modalities), (coefs, intercept) in self._coef.items():
            key = f"{f}/{'-'.join(map(str, modalities))}"
            arrays |= {f"coef/{key}/{i}": coef for i, coef in enumerate(coefs)}
            arrays[f"intercept/{key}"] = intercept
        return arrays, {"n_folds": self.n_folds, "n_classes": self.n_classes,
                        "dims": [len(block) for block in self._blocks], "shrinkage": self.shrinkage,
                        "temperature": self.temperature, "polish_steps": self.polish_steps}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> FoldDiscriminant:
        """A fitted discriminant that scores exactly as the one ``to_arrays`` was called on."""
        fitted = cls.__new__(cls)
        fitted.n_folds, fitted.n_classes = state["n_folds"], state["n_classes"]
        offsets = np.concatenate([[0], np.cumsum(state["dims"])])
        fitted._blocks = [np.arange(offsets[m], offsets[m + 1]) for m in range(len(state["dims"]))]
        fitted.shrinkage, fitted.temperature = state["shrinkage"], state["temperature"]
        fitted.polish_steps = state["polish_steps"]
        fitted._coef = {}
        for f in range(fitted.n_folds):
            for size in range(1, len(fitted._blocks) + 1):
                for modalities in combinations(range(len(fitted._blocks)), size):
                    key = f"{f}/{'-'.join(map(str, modalities))}"
                    fitted._coef[f, modalities] = ([arrays[f"coef/{key}/{i}"] for i in range(size)],
                                                   arrays[f"intercept/{key}"])
        return fitted

    def log_posterior(self, xs: list[np.ndarray], present: np.ndarray, fold: np.ndarray,
                      scales: list[np.ndarray] | None = None) -> np.ndarray:
        """(n, K) out-of-fold log posteriors. ``xs``: per modality (n, d_m), any values where missing;
        ``present`` (n, M); ``fold`` (n,); ``scales``: per modality (n,) factors applied to each row's
        product (its inverse norm: the rows are scored as unit rows without a scaled copy). Each row is
        scored by the model of the other folds, over the modalities it has (uniform where it has none):
        one BLAS call per fold, pattern and modality."""
        n = len(fold)
        logits = np.zeros((n, self.n_classes))
        pattern = present @ (1 << np.arange(present.shape[1]))
        for f in range(self.n_folds):
            in_fold = fold == f
            for key in np.unique(pattern[in_fold]):
                modalities = tuple(m for m in range(present.shape[1]) if key >> m & 1)
                if not modalities:
                    continue
                rows = np.flatnonzero(in_fold & (pattern == key))
                coefs, intercept = self._coef[f, modalities]
                block = np.zeros((rows.size, self.n_classes), np.float32)
                for m, coef in zip(modalities, coefs):
                    product = np.take(xs[m], rows, axis=0) @ coef
                    if scales is not None:
                        product *= scales[m][rows, None]
                    block += product
                logits[rows] = block + intercept
        return log_softmax(logits)

    def _columns(self, modalities: tuple[int, ...]) -> np.ndarray:
        return np.concatenate([self._blocks[m] for m in modalities])

    def _solve(self, f: int, modalities: tuple[int, ...], shrinkage: float) -> tuple[np.ndarray, np.ndarray]:
        cols = self._columns(modalities)
        cov = self._covariances[f]
        if len(cols) < len(cov):
            cov = cov[np.ix_(cols, cols)]
        shrunk = (1 - shrinkage) * cov
        shrunk.flat[:: len(cols) + 1] += shrinkage * np.trace(cov) / len(cols)
        mean = self._means[f][:, cols]
        coef = np.linalg.solve(shrunk, mean.T)  # (D_p, K)
        intercept = -0.5 * np.einsum("kd,dk->k", mean, coef) + self._log_prior[f]
        return coef, intercept

    def _choose(self, x: np.ndarray, labels: np.ndarray, fold: np.ndarray, shrinkages: tuple[float, ...],
                temperatures: tuple[float, ...]) -> tuple[float, float]:
        """The (shrinkage, temperature) of the grids with the best log-likelihood of the labels of one
        fold's rows (the first fold that has any) under the model of the other folds: one solve per
        shrinkage, not one per shrinkage and fold (at 2 x 768-d each solve is most of a second). The
        temperatures are scored one at a time from logits shifted once: all of them at once took (T, rows, K)
        float64 temporaries, 290 MB each at K = 330, and most of the review's fit."""
        everything = tuple(range(len(self._blocks)))
        f = int(fold.min()) if fold.size else 0
        rows = fold == f
        held, held_labels = x[rows], labels[rows]
        best = (-np.inf, shrinkages[0], temperatures[0])
        at = np.arange(held_labels.size), held_labels
        for a in shrinkages:
            coef, intercept = self._solve(f, everything, a)
            logits = held @ coef + intercept
            shifted = logits - logits.max(axis=1, keepdims=True)
            at_label = shifted[at].sum()
            for t in temperatures:
                score = at_label / t - np.log(np.exp(shifted / t).sum(axis=1)).sum()
                best = max(best, (float(score), a, t))
        return float(best[1]), float(best[2])


def polish(coef: np.ndarray, intercept: np.ndarray, x: np.ndarray, labels: np.ndarray,
           steps: int, penalty: float = POLISH_PENALTY) -> tuple[np.ndarray, np.ndarray]:
    """A few L-BFGS steps on the mean logistic loss of ``labels`` plus penalty/2 |w - w_lda|^2, from the
    LDA solution w_lda = (coef (D, K), intercept (K,)): the Gaussian model's direction, corrected where the
    embeddings are not Gaussian."""
    n, k = len(labels), coef.shape[1]
    start = np.vstack([coef, intercept[None]])
    onehot = np.zeros((n, k))
    onehot[np.arange(n), labels] = 1.0

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        # the two products in the rows' dtype (float32: half the memory traffic), the rest in float64
        logits = (x @ w[:-1].astype(x.dtype)).astype(np.float64) + w[-1]
        log_p = log_softmax(logits)
        residual = (np.exp(log_p) - onehot) / n
        grad = np.vstack([(x.T @ residual.astype(x.dtype)).astype(np.float64), residual.sum(axis=0)[None]])
        grad += penalty * (w - start)
        return float(-log_p[np.arange(n), labels].mean() + penalty / 2 * ((w - start) ** 2).sum()), grad

    w = lbfgs(loss_grad, start, steps)
    return w[:-1], w[-1]


def lbfgs(loss_grad, w: np.ndarray, steps: int) -> np.ndarray:
    """Minimize by limited-memory BFGS (two-loop recursion, backtracking on the Armijo condition)."""
    loss, grad = loss_grad(w)
    history: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(steps):
        direction = -grad
        alphas = []
        for s, y, rho in reversed(history):
            alpha = rho * np.vdot(s, direction)
            direction = direction - alpha * y
            alphas.append(alpha)
        if history:
            s, y, _ = history[-1]
            direction = direction * (np.vdot(s, y) / np.vdot(y, y))
        for (s, y, rho), alpha in zip(history, reversed(alphas)):
            direction = direction + s * (alpha - rho * np.vdot(y, direction))
        slope = np.vdot(grad, direction)
        if slope >= 0:  # not a descent direction: restart from the gradient
            history, direction, slope = [], -grad, -np.vdot(grad, grad)
        step = 1.0 if history else 1.0 / max(np.sqrt(np.vdot(grad, grad)), 1e-12)
        for _ in range(_LINE_SEARCH_HALVINGS):
            trial = w + step * direction
            trial_loss, trial_grad = loss_grad(trial)
            if trial_loss <= loss + 1e-4 * step * slope:
                break
            step /= 2
        else:
            break
        s, y = trial - w, trial_grad - grad
        if np.vdot(s, y) > 1e-12:
            history = (history + [(s, y, 1.0 / np.vdot(s, y))])[-_LBFGS_MEMORY:]
        w, loss, grad = trial, trial_loss, trial_grad
    return w
