"""One posterior per item from all its modalities, and the weights that make its confidence mean what it says.

Each modality's refinement gives an item a vector of log terms s_v (n, K)
(``MixtureRefiner.log_terms``). The joint posterior of an item is

    p(k) = softmax_k( sum over its modalities v of  a_v * s_vk ),

a product of experts: an item whose other modalities were rejected uses the
ones it has. The raw sum (a_v = 1) is badly overconfident: the mixture's
shared diagonal variance ignores how the dimensions move together, and the
modalities of one item are not independent witnesses. The weights a_v fix
both, one number per modality: ``fit_weights`` chooses them by the
likelihood of known labels, ``cross_view_weights`` without any label.
A single modality is the case V = 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from pairwise_core.refine import log_softmax

_NEWTON_STEPS = 50
# A lone modality has no other witness to calibrate against: its weight is 1 / 12, the temperature with the
# lowest mean ECE over the single views of the two MiniLM development catalogs' tune halves
# (bench/research_label_free_weight.py; held-out halves and the mpnet catalogs: docs/results.md). It is not
# fitted to the catalog: where the embedding model's spread differs (the synthetic generator's) it is off.
LABEL_FREE_WEIGHT = 1 / 12
# the temperatures cross_view_weights searches (a log grid), and its rounds of alternation
_TEMPERATURES = np.geomspace(0.5, 128, 49)
_ROUNDS = 4
# The classes per row the weight fits read (prune_classes); exact up to this many classes. At K = 330 the fits
# over every class were most of the refinement's fit. The fitted weights are small (a flat posterior), so a
# row's mass spreads wide: on the WordNet taxonomy catalog 32 classes cost 0.6 points of joint accuracy and
# tripled its ECE, 128 cost 0.1 point (full runs: docs/performance.md).
FIT_CLASSES = 128


def joint_log_posterior(terms: np.ndarray, present: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, K) log posterior from ``terms`` (n, V, K), ``present`` (n, V) and ``weights`` (V,), or (n, V)
    for weights that differ by item (out-of-fold calibration).

    Modalities an item lacks contribute nothing; an item with none gets the
    uniform posterior.
    """
    per_item = np.broadcast_to(weights, present.shape)
    total = np.zeros((terms.shape[0], terms.shape[2]), np.result_type(terms, per_item))
    for v in range(terms.shape[1]):  # per modality: no (n, V, K) temporary
        total += np.where(present[:, v, None], terms[:, v], 0.0) * per_item[:, v, None]
    return log_softmax(total)


def alone_or_joint(present: np.ndarray, joint: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per item, ``own[i, v]`` (n, V) where item i has modality v alone, else ``joint[i]`` (n, ...) as given.

    An item with one modality is the case V = 1: its joint posterior is that modality's own, under the weight
    (or parent power) fitted for it alone. The joint weights are fitted on items with several modalities,
    which are not independent witnesses: each weighs less than alone, and an item left with one of them got a
    near-flat posterior (WordNet nouns without their gloss: joint confidence 0.09 where the title alone gave
    0.38, every item under the parent with the most classes).
    """
    joint = np.asarray(joint)
    lone = present.sum(axis=1) == 1
    if not lone.any():
        return joint
    which = np.argmax(present, axis=1)
    mine = own[np.arange(len(present)), which]
    if joint.ndim == 1:
        return np.where(lone, mine, joint)
    return np.where(lone[:, None], np.where(present, mine[:, None], 0.0), joint)


def prune_classes(terms: np.ndarray, present: np.ndarray, keep: int,
                  labels: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's ``keep`` classes with the highest sum of its present terms, its known label always among
    them: (their terms (n, V, c), the classes (n, c), the label's position among them (n,), -1 where the row
    has no label). With ``keep`` >= K, every class in order: the exact terms.

    The weight fits read a row only through its label's term and a log-sum-exp over classes: the pruned fit
    is the exact fit of the posterior in which every other class has probability 0, at the cost of c
    instead of K classes per row (``FIT_CLASSES`` says what that costs in accuracy).
    """
    n, k = terms.shape[0], terms.shape[2]
    labels = np.full(n, -1) if labels is None else labels
    if keep >= k:
        return terms, np.broadcast_to(np.arange(k), (n, k)), labels
    score = np.where(present[:, :, None], terms, 0.0).sum(axis=1)
    rows = np.flatnonzero(labels >= 0)
    score[rows, labels[rows]] = np.inf
    classes = np.argpartition(-score, keep - 1, axis=1)[:, :keep]
    position = np.where(labels >= 0, np.argmax(classes == labels[:, None], axis=1), -1)
    return np.take_along_axis(terms, classes[:, None, :], axis=2), classes, position


def fit_weights(terms: np.ndarray, present: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The weights a >= 0 (V,) that maximize the likelihood of ``labels`` under ``joint_log_posterior``.

    A convex problem in V unknowns (the log-sum-exp of a linear function):
    Newton's method with a step-halving line search, projected onto a >= 0
    (weights at the bound with the gradient pushing outward are held there).
    """
    n, v, _ = terms.shape
    s = np.where(present[:, :, None], terms, 0.0).astype(np.float64, copy=False)
    # The likelihood depends on a * s alone, and Newton's steps do not change with the units of s: solve
    # for terms scaled to at most 1 in size and scale the weights back. The step's ridge (1e-9) then keeps
    # its meaning whatever the terms' size; against terms of 1e5 (a strong anchor, eps near 0) it vanished
    # in rounding and a flat Hessian was singular.
    scale = float(np.abs(s).max()) or 1.0
    s /= scale
    rows = np.arange(n)
    at_label = s[rows, :, labels]  # (n, V)
    views = [np.ascontiguousarray(s[:, w]) for w in range(v)]  # (n, K) each, once: vdot copies a strided view

    def loss_grad_hess(a: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        logp = log_softmax(np.einsum("nvk,v->nk", s, a))
        p = np.exp(logp)
        mean = np.einsum("nk,nvk->nv", p, s)  # E_p[s_v]
        weighted = [p * views[w] for w in range(v)]  # (n, K) each: no (n, V, V, K) temporary
        second = np.array([[np.vdot(weighted[w], views[u]) for u in range(v)] for w in range(v)])
        hess = (second - mean.T @ mean) / n
        return float(-logp[rows, labels].mean()), (mean - at_label).mean(axis=0), hess

    a = np.full(v, scale)  # a = 1 in the terms' own units
    loss, grad, hess = loss_grad_hess(a)
    for _ in range(_NEWTON_STEPS):
        free = (a > 0) | (grad < 0)  # a weight held at 0 by the bound stays out of the Newton step
        if not free.any():
            break
        step = np.zeros(v)
        step[free] = np.linalg.solve(hess[np.ix_(free, free)] + 1e-9 * np.eye(free.sum()), grad[free])
        for _ in range(30):  # halve until the loss goes down
            trial = np.maximum(a - step, 0.0)
            trial_loss, trial_grad, trial_hess = loss_grad_hess(trial)
            if trial_loss <= loss:
                break
            step = step / 2
        else:
            break
        converged = loss - trial_loss < 1e-10
        a, loss, grad, hess = trial, trial_loss, trial_grad, trial_hess
        if converged:
            break
    return a / scale


def cross_view_weights(terms: np.ndarray, present: np.ndarray,
                       n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Label-free weights: (each modality's own, the joint's), both (V,).

    Modality v's temperature s_v is the one under which its posterior best
    predicts the label the other modalities give, read as a noisy copy of the
    truth: P(other says k) = a p_k + (1 - a)(1 - p_k) / (K - 1), with a the
    others' accuracy as their own calibrated mean confidence estimates it.
    The temperatures are found in turn, a few rounds. The joint's weight is
    1 / sum_v s_v for every modality: the modalities of an item are treated
    as redundant witnesses, not independent ones, whose errors would multiply
    (held-out ECE 0.03-0.05 on three real catalogs, against 0.28-0.30 for the
    product of calibrated modalities). A modality's own weight is the
    geometric mean of 1 / s_v and the joint's: 1 / s_v alone is overconfident
    (ECE 0.13-0.21), since modalities whose errors are correlated agree more
    often than independent witnesses would, and the joint's alone is too
    cautious for the stronger modality; the mean gave 0.01-0.12 on the same
    three catalogs in full runs (an empirical choice, with no catalog held out).
    With one modality there is no witness: LABEL_FREE_WEIGHT. ``n_classes``: K when ``terms`` holds only
    each row's top classes (``prune_classes``), for the noise model's K - 1 other classes.
    """
    n_views, k = terms.shape[1], n_classes or terms.shape[2]
    terms = terms.astype(np.float64, copy=False)
    if n_views < 2 or k < 2:
        return np.full(n_views, LABEL_FREE_WEIGHT), np.full(n_views, LABEL_FREE_WEIGHT)
    temperature = np.ones(n_views)
    for _ in range(_ROUNDS):
        for v in range(n_views):
            others = np.arange(n_views) != v
            rows = present[:, v] & present[:, others].any(axis=1)
            if not rows.any():
                continue
            pooled = joint_log_posterior(terms[rows][:, others], present[rows][:, others],
                                         np.full(others.sum(), 1 / temperature[others].sum()))
            said, accuracy = pooled.argmax(axis=1), float(np.exp(pooled.max(axis=1)).mean())
            # log softmax(own / s) at the said class, for each s of the grid: the terms shifted by their row's
            # max once, then one scaled exp and sum per s (not a whole log softmax to read one entry a row)
            own = terms[rows, v]
            own = own - own.max(axis=1, keepdims=True)
            own_said, scratch = own[np.arange(said.size), said], np.empty_like(own)

            def fit(s: float) -> float:
                np.exp(np.divide(own, s, out=scratch), out=scratch)
                p = np.exp(own_said / s - np.log(scratch.sum(axis=1)))
                return float(np.log(accuracy * p + (1 - accuracy) * (1 - p) / (k - 1) + 1e-300).sum())

            temperature[v] = _grid_max(fit)
    joint = 1 / temperature.sum()
    return np.sqrt(joint / temperature), np.full(n_views, joint)


def _grid_max(score: Callable[[float], float]) -> float:
    """The temperature of the grid with the best score: every 4th point first, then the best one's neighbours
    (19 scores instead of 49; each is a softmax over the sample)."""
    coarse = max(range(0, _TEMPERATURES.size, 4), key=lambda i: score(_TEMPERATURES[i]))
    near = range(max(coarse - 3, 0), min(coarse + 4, _TEMPERATURES.size))
    return float(_TEMPERATURES[max(near, key=lambda i: score(_TEMPERATURES[i]))])
