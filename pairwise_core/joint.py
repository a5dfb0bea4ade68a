"""One posterior per item from all its modalities, and the weights that make its confidence mean what it says.

Each modality's refinement gives an item a vector of log terms s_v (n, K)
(``MixtureRefiner.log_terms``). The joint posterior of an item is

    p(k) = softmax_k( sum over its modalities v of  a_v * s_vk ),

a product of experts: an item whose other modalities were rejected uses the
ones it has. The raw sum (a_v = 1) is badly overconfident: the mixture's
shared diagonal variance ignores how the dimensions move together, and the
modalities of one item are not independent witnesses. The weights a_v fix
both, one number per modality; ``fit_weights`` chooses them by the
likelihood of known labels. A single modality is the case V = 1.
"""

from __future__ import annotations

import numpy as np

from pairwise_core.refine import log_softmax

_NEWTON_STEPS = 50
# the weight of every modality when no labels calibrate them (see README: chosen on two real catalogs)
LABEL_FREE_WEIGHT = 0.07


def joint_log_posterior(terms: np.ndarray, present: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(n, K) log posterior from ``terms`` (n, V, K), ``present`` (n, V) and ``weights`` (V,), or (n, V)
    for weights that differ by item (out-of-fold calibration).

    Modalities an item lacks contribute nothing; an item with none gets the
    uniform posterior.
    """
    per_item = np.broadcast_to(weights, present.shape)
    return log_softmax(np.einsum("nvk,nv->nk", np.where(present[:, :, None], terms, 0.0), per_item))


def fit_weights(terms: np.ndarray, present: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The weights a >= 0 (V,) that maximize the likelihood of ``labels`` under ``joint_log_posterior``.

    A convex problem in V unknowns (the log-sum-exp of a linear function):
    Newton's method with a step-halving line search, projected onto a >= 0.
    """
    n, v, _ = terms.shape
    s = np.where(present[:, :, None], terms, 0.0)
    rows = np.arange(n)
    at_label = s[rows, :, labels]  # (n, V)

    def loss_grad_hess(a: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        logits = np.einsum("nvk,v->nk", s, a)
        logp = log_softmax(logits)
        p = np.exp(logp)
        mean = np.einsum("nk,nvk->nv", p, s)  # E_p[s_v]
        second = np.einsum("nk,nvk,nwk->vw", p, s, s)
        hess = (second - mean.T @ mean) / n
        return float(-logp[rows, labels].mean()), (mean - at_label).mean(axis=0), hess

    a = np.ones(v)
    loss, grad, hess = loss_grad_hess(a)
    for _ in range(_NEWTON_STEPS):
        step = np.linalg.solve(hess + 1e-9 * np.eye(v), grad)
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
    return a
