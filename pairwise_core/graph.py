"""Graph refinement (METHOD.md step 10): the refined posteriors propagated over the catalog's kNN graph.

With P the items' refined posteriors and W the directed kNN graph (w_ij = max(cos_ij, 0)^p for each of
item i's k neighbours j), iterate F <- (1 - alpha) P + alpha D^-1 W F. D^-1 W is row-stochastic, so every
row of F stays a probability distribution (a convex mixture of P's rows): no renormalisation, and a row
of P that is all zeros (an item its modality rejected) still gets its neighbours' classes.

The graph is directed, not symmetrised: then a new item's one step against its neighbours' stored F
(``inductive``) is the same equation the catalog's items satisfy at the fixed point, so an item labelled
later gets, up to the iterations' remainder alpha^t, the label it would have got in the catalog.

Pure numpy and scipy.sparse: the neighbours come from an index the pipeline builds (tasks/graph.py).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def edge_weights(similarities: np.ndarray, power: float) -> np.ndarray:
    """w = max(cos, 0)^power, float32; a missing neighbour (NaN) weighs 0."""
    cos = np.nan_to_num(np.asarray(similarities, np.float32), nan=0.0)
    return np.power(np.maximum(cos, 0.0), np.float32(power), dtype=np.float32)


def transition(neighbours: np.ndarray, weights: np.ndarray, n_columns: int) -> sparse.csr_matrix:
    """D^-1 W as a sparse (n, n_columns) matrix from (n, k) neighbour indices (-1: none) and weights.

    A row whose weights sum to zero stays empty: its item keeps (1 - alpha) P, renormalised later.
    """
    neighbours = np.asarray(neighbours, np.int64)
    weights = np.where(neighbours >= 0, weights, 0).astype(np.float64)
    total = weights.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = np.where(total > 0, weights / total, 0)
    keep = weights > 0
    rows = np.repeat(np.arange(len(neighbours)), neighbours.shape[1]).reshape(neighbours.shape)
    return sparse.csr_matrix((weights[keep].astype(np.float32), (rows[keep], neighbours[keep])),
                             shape=(len(neighbours), n_columns))


def propagate(prior: np.ndarray, step: sparse.csr_matrix, *, alpha: float, iterations: int) -> np.ndarray:
    """F after ``iterations`` of F <- (1 - alpha) P + alpha S F from F = P, with S = D^-1 W (``transition``)."""
    prior = np.asarray(prior, np.float32)
    anchored = (1 - alpha) * prior
    f = prior
    for _ in range(iterations):
        f = anchored + np.float32(alpha) * (step @ f)
    return normalize(f)


def inductive(prior: np.ndarray, step: sparse.csr_matrix, stored: np.ndarray, *, alpha: float) -> np.ndarray:
    """New items' F: one step against their neighbours' stored F, (1 - alpha) P + alpha S F_stored, where
    ``step`` maps the new items (rows) to the stored items (columns)."""
    f = (1 - alpha) * np.asarray(prior, np.float32) + np.float32(alpha) * (step @ np.asarray(stored, np.float32))
    return normalize(f)


def normalize(f: np.ndarray) -> np.ndarray:
    """Rows scaled to sum to one: an item whose prior was empty, or with no neighbour, sums to alpha or 1 - alpha.
    A row of zeros (no prior and no neighbour) stays zero."""
    total = f.sum(axis=1, keepdims=True)
    return np.divide(f, total, out=np.zeros_like(f), where=total > 0)
