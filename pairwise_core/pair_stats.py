"""Streaming, mergeable statistics of confident class-pair members (METHOD.md step 2).

For every ordered class pair (a, b), the items that count as confident
members of a against b are those whose base label is a, whose top score is
at least the score floor, and whose scores for a and b differ by at least the
pair margin. For each such set we keep count, sum and sum of squares per
dimension, in float64. Sums merge by addition, so statistics of chunks add up
to exactly the statistics of the whole (up to float64 rounding order): the
pipeline maps over partitions and reduces.

Statistics are taken on L2-normalised items: the method is cosine-based
throughout, so an item's length carries no class information.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairStats:
    """count[a, b], sum[a, b, :] and sumsq[a, b, :] of confident a-items against b.

    The diagonal (a, a) holds all items with base label a above the floor.
    """

    count: np.ndarray  # (K, K) int64
    sum: np.ndarray  # (K, K, d) float64
    sumsq: np.ndarray  # (K, K, d) float64

    @classmethod
    def zeros(cls, n_classes: int, n_features: int) -> PairStats:
        return cls(
            np.zeros((n_classes, n_classes), np.int64),
            np.zeros((n_classes, n_classes, n_features), np.float64),
            np.zeros((n_classes, n_classes, n_features), np.float64),
        )

    def __add__(self, other: PairStats) -> PairStats:
        if self.sum.shape != other.sum.shape:
            raise ValueError(f"cannot merge pair statistics of shapes {self.sum.shape} and {other.sum.shape}")
        return PairStats(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm; zero rows stay zero (callers validate)."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    return x / np.where(norms == 0, 1, norms)[:, None].astype(x.dtype, copy=False)


def top_two(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Argmax, top score and margin (top-1 minus top-2) per row.

    With one class there is no runner-up and the margin is NaN.
    """
    rows = np.arange(scores.shape[0])
    labels = np.argmax(scores, axis=1)
    top = scores[rows, labels]
    if scores.shape[1] < 2:
        return labels, top, np.full(top.shape, np.nan, dtype=scores.dtype)
    second = np.partition(scores, scores.shape[1] - 2, axis=1)[:, -2]
    return labels, top, top - second


def pair_stats(
    x_unit: np.ndarray,
    scores: np.ndarray,
    *,
    score_floor: float | None,
    pair_margin: float,
    into: PairStats | None = None,
) -> PairStats:
    """Pair statistics of one block of items, added to ``into`` (or to new zeros).

    Parameters
    ----------
    x_unit : array (n, d)
        L2-normalised items.
    scores : array (n, K)
        Cosine of every item with every class (the base scores).
    score_floor : float or None
        Items whose top score is below it join no set.
    pair_margin : float
        An item of class a joins the set (a, b) only if |s_a - s_b| >= pair_margin.
    into : PairStats, optional
        Accumulate here, in place.

    Per class a, in float64: the sums of a's items go to every pair (a, b),
    then the few items too close to b (|s_a - s_b| < pair_margin) are taken
    out of (a, b) again. That is O(n d) work, not O(n K d). Callers pass
    blocks of a few thousand rows, so the float64 copies stay small.
    """
    n_classes = scores.shape[1]
    stats = PairStats.zeros(n_classes, x_unit.shape[1]) if into is None else into
    labels, top, _ = top_two(scores)
    eligible = np.ones_like(top, dtype=bool) if score_floor is None else top >= score_floor
    for a in np.unique(labels[eligible]):
        rows = np.flatnonzero(eligible & (labels == a))
        xa = x_unit[rows].astype(np.float64)
        xa_sq = xa * xa
        stats.count[a] += rows.size
        stats.sum[a] += xa.sum(axis=0)
        stats.sumsq[a] += xa_sq.sum(axis=0)
        if pair_margin > 0:
            gap = np.abs(scores[rows, a : a + 1].astype(np.float64) - scores[rows])
            too_close = gap < pair_margin
            too_close[:, a] = False
            for b in np.flatnonzero(too_close.any(axis=0)):
                out = too_close[:, b]
                stats.count[a, b] -= int(out.sum())
                stats.sum[a, b] -= xa[out].sum(axis=0)
                stats.sumsq[a, b] -= xa_sq[out].sum(axis=0)
    return stats
