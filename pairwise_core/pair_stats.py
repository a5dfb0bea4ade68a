"""Streaming, mergeable statistics of confident class-pair members (METHOD.md step 2).

For every ordered class pair (a, b), the items that count as confident
members of a against b are those whose base label is a, whose top score is
at least the score floor, and whose scores for a and b differ by at least the
pair margin. For each such set we need count, sum and sum of squares per
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
    """Confident-member statistics of every class pair, stored in O(K d), not O(K^2 d).

    With pair margin 0 the set (a, b) is simply every confident item of class
    a, whatever b is, so per-class totals suffice. A positive pair margin
    takes, per ordered pair, the few items too close to b out again: those
    corrections are kept sparsely, keyed by ``a * K + b``. ``met`` lists the
    unordered pairs (key ``lo * K + hi``) that some item's candidate classes
    contain, when candidates are pruned (empty otherwise: every pair meets).
    """

    count: np.ndarray  # (K,) int64: confident items per base class
    sum: np.ndarray  # (K, d) float64
    sumsq: np.ndarray  # (K, d) float64
    correction_keys: np.ndarray  # (C,) int64, sorted, unique: a * K + b
    correction_count: np.ndarray  # (C,) int64: items of a too close to b
    correction_sum: np.ndarray  # (C, d) float64
    correction_sumsq: np.ndarray  # (C, d) float64
    met: np.ndarray  # (M,) int64, sorted, unique: lo * K + hi

    @classmethod
    def zeros(cls, n_classes: int, n_features: int) -> PairStats:
        empty = np.zeros(0, np.int64)
        return cls(
            np.zeros(n_classes, np.int64), np.zeros((n_classes, n_features)), np.zeros((n_classes, n_features)),
            empty, empty, np.zeros((0, n_features)), np.zeros((0, n_features)), empty,
        )

    @property
    def n_classes(self) -> int:
        return self.count.shape[0]

    def __add__(self, other: PairStats) -> PairStats:
        if self.sum.shape != other.sum.shape:
            raise ValueError(f"cannot merge pair statistics of shapes {self.sum.shape} and {other.sum.shape}")
        keys, count, total, total_sq = _merge_keyed(
            (self.correction_keys, other.correction_keys),
            (self.correction_count, other.correction_count),
            (self.correction_sum, other.correction_sum),
            (self.correction_sumsq, other.correction_sumsq),
        )
        return PairStats(
            self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq,
            keys, count, total, total_sq, union_keys([self.met, other.met], self.n_classes),
        )

    def moments(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """count, sum and sumsq of the confident a-items against b, for arrays of ordered pairs."""
        count, total, total_sq = self.count[a], self.sum[a], self.sumsq[a]
        if self.correction_keys.size:
            keys = a * self.n_classes + b
            at = np.clip(np.searchsorted(self.correction_keys, keys), 0, self.correction_keys.size - 1)
            hit = self.correction_keys[at] == keys
            count = count - np.where(hit, self.correction_count[at], 0)
            total = total - np.where(hit[:, None], self.correction_sum[at], 0.0)
            total_sq = total_sq - np.where(hit[:, None], self.correction_sumsq[at], 0.0)
        return count, total, total_sq

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, sum, sumsq) of every ordered pair as K x K (x d) arrays: small K only."""
        k = self.n_classes
        a, b = np.divmod(np.arange(k * k), k)
        count, total, total_sq = self.moments(a, b)
        d = self.sum.shape[1]
        return count.reshape(k, k), total.reshape(k, k, d), total_sq.reshape(k, k, d)


def _merge_keyed(keys, counts, sums, sumsqs):
    """Concatenate keyed rows and add up the rows that share a key."""
    all_keys = np.concatenate(keys)
    unique, inverse = np.unique(all_keys, return_inverse=True)
    count = np.zeros(unique.size, np.int64)
    np.add.at(count, inverse, np.concatenate(counts))
    d = sums[0].shape[1]
    total = np.zeros((unique.size, d))
    total_sq = np.zeros((unique.size, d))
    np.add.at(total, inverse, np.concatenate(sums))
    np.add.at(total_sq, inverse, np.concatenate(sumsqs))
    return unique, count, total, total_sq


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
    candidates: int | None = None,
) -> PairStats:
    """Pair statistics of one block of items.

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
    candidates : int or None
        When set, record which pairs meet: those among an item's top
        ``candidates`` classes by base score.

    Per class a, in float64: the class totals, then the few items too close
    to some b as sparse corrections. O(n d) work and O(K d) memory; callers
    pass blocks of a few thousand rows, so the float64 copies stay small.
    """
    n_classes, d = scores.shape[1], x_unit.shape[1]
    stats = PairStats.zeros(n_classes, d)
    labels, top, _ = top_two(scores)
    eligible = np.ones_like(top, dtype=bool) if score_floor is None else top >= score_floor
    keys, counts, sums, sumsqs = [], [], [], []
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
                keys.append(a * n_classes + b)
                counts.append(int(out.sum()))
                sums.append(xa[out].sum(axis=0))
                sumsqs.append(xa_sq[out].sum(axis=0))
    met = _pairs_met(scores, min(candidates, n_classes)) if candidates is not None else stats.met
    order = np.argsort(keys)
    return PairStats(
        stats.count, stats.sum, stats.sumsq,
        np.asarray(keys, np.int64)[order], np.asarray(counts, np.int64)[order],
        np.asarray(sums).reshape(-1, d)[order], np.asarray(sumsqs).reshape(-1, d)[order], met,
    )


def top_candidates(scores: np.ndarray, candidates: int) -> np.ndarray:
    """Each row's top ``candidates`` classes by base score (in no particular order)."""
    return np.argpartition(-scores, candidates - 1, axis=1)[:, :candidates]


def _pairs_met(scores: np.ndarray, candidates: int) -> np.ndarray:
    """Keys lo * K + hi of the unordered pairs among some row's candidate classes."""
    k = scores.shape[1]
    top = np.sort(top_candidates(scores, candidates), axis=1)
    lo, hi = np.triu_indices(candidates, k=1)
    return union_keys([top[:, lo] * k + top[:, hi]], k)


# K x K flags up to this many (16 MB), a sort beyond
_BITMAP_KEYS = 1 << 24


def union_keys(parts: list[np.ndarray], n_classes: int) -> np.ndarray:
    """The sorted unique pair keys (lo * K + hi) found in any of the parts.

    Marked in a K x K bitmap while that is small: sorting the keys of every
    block of rows (K = 500, m = 16: 500,000 a block) was most of pass 1.
    """
    if n_classes * n_classes > _BITMAP_KEYS:
        return np.unique(np.concatenate([part.ravel() for part in parts]))
    seen = np.zeros(n_classes * n_classes, dtype=bool)
    for part in parts:
        seen[part] = True
    return np.flatnonzero(seen)
