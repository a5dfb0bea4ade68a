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

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# Keys whose per-item corrections are summed at once: the (keys, d) float64
# temporaries stay under glibc's 32 MB mmap threshold at d = 768.
_KEY_CHUNK = 4096


@dataclass(frozen=True)
class PairStats:
    """Confident-member statistics of every class pair, without O(K^2 d) pair totals.

    With pair margin 0 the set (a, b) is simply every confident item of class
    a, whatever b is, so per-class totals suffice. A positive pair margin
    takes, per ordered pair, the items of a too close to b out again: a
    correction keyed ``a * K + b``. Corrections are held exactly, in two forms:

    - summed per key (``correction_*``): one row of 2d float64 per key, at
      most K(K-1) rows, whatever the number of items;
    - per item (``near_*``): the unit row of each item that is too close to
      some class, once, and one (key, row) entry per class it is too close
      to. Far smaller while items are few against K^2 (K = 500, d = 768,
      margin 0.02, 50,000 synthetic items: 41,953 of them too close to some
      class, 97,641 keys: 1.2 GB summed against 0.14 GB per item).

    Every merge sums the per-item form into rows when the rows it would add
    take no more bytes than it does, so the corrections of a set of items
    never take more than the smaller of: all of them summed per key, and all
    of them per item (the items' own rows plus 16 bytes per entry). A
    partition's statistics are thus never larger than its own embeddings.
    ``met`` lists the unordered pairs (key ``lo * K + hi``) that some item's
    candidate classes contain, when candidates are pruned (empty otherwise:
    every pair meets).
    """

    count: np.ndarray  # (K,) int64: confident items per base class
    sum: np.ndarray  # (K, d) float64
    sumsq: np.ndarray  # (K, d) float64
    correction_keys: np.ndarray  # (C,) int64, sorted, unique: a * K + b
    correction_count: np.ndarray  # (C,) int64: items of a too close to b
    correction_sum: np.ndarray  # (C, d) float64
    correction_sumsq: np.ndarray  # (C, d) float64
    near_items: np.ndarray  # (N, d) unit rows, float32 or float64 as scored: items too close to some class
    near_keys: np.ndarray  # (E,) int64, sorted: a * K + b for each (item, b) too close
    near_rows: np.ndarray  # (E,) int64: that item's row in near_items
    met: np.ndarray  # (M,) int64, sorted, unique: lo * K + hi

    @classmethod
    def zeros(cls, n_classes: int, n_features: int) -> PairStats:
        empty = np.zeros(0, np.int64)
        return cls(
            np.zeros(n_classes, np.int64), np.zeros((n_classes, n_features)), np.zeros((n_classes, n_features)),
            empty, empty, np.zeros((0, n_features)), np.zeros((0, n_features)),
            np.zeros((0, n_features), np.float32), empty, empty, empty,
        )

    @property
    def n_classes(self) -> int:
        return self.count.shape[0]

    def __add__(self, other: PairStats) -> PairStats:
        return PairStats.merge((self, other))

    @classmethod
    def merge(cls, parts: Iterable[PairStats]) -> PairStats:
        """The statistics of all parts' items together (at least one part).

        One pass: totals are added in place and the per-item corrections are
        joined once at the end; adding the parts two at a time would copy
        everything so far again for each part.
        """
        stream = iter(parts)
        first = next(stream)
        count, total, total_sq = first.count.copy(), first.sum.copy(), first.sumsq.copy()
        keyed, near, met = first._keyed(), [first._near()], first.met
        for part in stream:
            if part.sum.shape != total.shape:
                raise ValueError(f"cannot merge pair statistics of shapes {total.shape} and {part.sum.shape}")
            count += part.count
            total += part.sum
            total_sq += part.sumsq
            if part.correction_keys.size:
                keyed = _sum_keyed([keyed, part._keyed()])
            if part.near_keys.size:
                near.append(part._near())
            if part.met.size:
                met = union_keys([met, part.met], first.n_classes)
        return cls(count, total, total_sq, *keyed, *_join_near(near), met)._settled()

    def _keyed(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.correction_keys, self.correction_count, self.correction_sum, self.correction_sumsq

    def _near(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.near_items, self.near_keys, self.near_rows

    def _settled(self) -> PairStats:
        """The same statistics, the per-item corrections summed into rows if those take no more bytes."""
        if not self.near_keys.size:
            return self
        keys = self.near_keys[np.r_[True, self.near_keys[1:] != self.near_keys[:-1]]]
        d = self.sum.shape[1]
        new_rows = keys.size - np.isin(keys, self.correction_keys, assume_unique=True).sum()
        row_bytes = 16 * d + 16  # key, count, and d float64 each of sum and sumsq
        near_bytes = self.near_items.nbytes + self.near_keys.nbytes + self.near_rows.nbytes
        if new_rows * row_bytes > near_bytes:
            return self
        count, total, total_sq = np.zeros(keys.size, np.int64), np.zeros((keys.size, d)), np.zeros((keys.size, d))
        self._subtract_near(keys, count, total, total_sq)  # from zeros: the sums, negated
        for array in (count, total, total_sq):
            np.negative(array, out=array)
        keyed = _sum_keyed([self._keyed(), (keys, count, total, total_sq)])
        no_items = PairStats.zeros(self.n_classes, d)._near()
        return PairStats(self.count, self.sum, self.sumsq, *keyed, *no_items, self.met)

    def _subtract_near(self, keys: np.ndarray, count: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> None:
        """Subtract (count, sum, sumsq) of each key's per-item corrections from its row, in place.

        Steps through the j-th entry of every key, the keys with most entries
        first so that each step is a slice: np.add.at and np.add.reduceat over
        rows run 10-30x slower here. Keys go _KEY_CHUNK at a time, which
        bounds the float64 temporaries.
        """
        d = total.shape[1]
        rows = np.empty((min(_KEY_CHUNK, keys.size), d), self.near_items.dtype)
        step64 = np.empty((min(_KEY_CHUNK, keys.size), d))
        for begin in range(0, keys.size, _KEY_CHUNK):
            chunk = slice(begin, begin + _KEY_CHUNK)
            start = np.searchsorted(self.near_keys, keys[chunk], "left")
            n = np.searchsorted(self.near_keys, keys[chunk], "right") - start
            count[chunk] -= n
            order = np.argsort(-n, kind="stable")[: np.count_nonzero(n)]
            start, longest = start[order], n[order]
            sums, sums_sq = np.zeros((order.size, d)), np.zeros((order.size, d))
            for j in range(longest[0] if longest.size else 0):
                runs = np.searchsorted(-longest, -j)  # the keys with more than j entries
                # into reused buffers: no fresh arrays per step
                step = step64[:runs]
                np.copyto(step, np.take(self.near_items, self.near_rows[start[:runs] + j], axis=0, out=rows[:runs],
                                        mode="clip"))
                sums[:runs] += step
                sums_sq[:runs] += np.multiply(step, step, out=step)
            total[order + begin] -= sums
            total_sq[order + begin] -= sums_sq

    def moments(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """count, sum and sumsq of the confident a-items against b, for arrays of ordered pairs."""
        count, total, total_sq = self.count[a], self.sum[a], self.sumsq[a]
        rows, *corrected = self.corrected(a, b)
        for array, value in zip((count, total, total_sq), corrected, strict=True):
            array[rows] = value
        return count, total, total_sq

    def corrected(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The pairs with corrections (ascending places in a and b) and their count, sum and sumsq.

        Every other pair's moments are class a's totals as they stand, so a
        caller that derives something per pair from them (a mean, a variance)
        can derive it once per class and redo only these rows.
        """
        keys = a * self.n_classes + b
        hit = np.zeros(keys.shape, dtype=bool)
        if self.correction_keys.size:
            at = np.clip(np.searchsorted(self.correction_keys, keys), 0, self.correction_keys.size - 1)
            keyed = self.correction_keys[at] == keys
            hit |= keyed
        if self.near_keys.size:
            hit |= np.searchsorted(self.near_keys, keys, "right") > np.searchsorted(self.near_keys, keys, "left")
        rows = np.flatnonzero(hit)
        count, total, total_sq = self.count[a[rows]], self.sum[a[rows]], self.sumsq[a[rows]]
        if self.correction_keys.size:
            place = np.flatnonzero(keyed[rows])
            source = at[rows[place]]
            count[place] -= self.correction_count[source]
            total[place] -= self.correction_sum[source]
            total_sq[place] -= self.correction_sumsq[source]
        if self.near_keys.size:
            self._subtract_near(keys[rows], count, total, total_sq)
        return rows, count, total, total_sq

    def dense(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, sum, sumsq) of every ordered pair as K x K (x d) arrays: small K only."""
        k = self.n_classes
        a, b = np.divmod(np.arange(k * k), k)
        count, total, total_sq = self.moments(a, b)
        d = self.sum.shape[1]
        return count.reshape(k, k), total.reshape(k, k, d), total_sq.reshape(k, k, d)


def _sum_keyed(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Keyed rows (keys, count, sum, sumsq) of several parts, added up per key.

    Keys are unique within a part, so a part's rows add with plain fancy
    ``+=`` at their keys' places in the union (no np.add.at, no sort of rows).
    """
    nonempty = [part for part in parts if part[0].size]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else parts[0]
    parts = nonempty
    keys = np.unique(np.concatenate([part[0] for part in parts]))
    d = parts[0][2].shape[1]
    count, total, total_sq = np.zeros(keys.size, np.int64), np.zeros((keys.size, d)), np.zeros((keys.size, d))
    for part_keys, part_count, part_sum, part_sumsq in parts:
        at = np.searchsorted(keys, part_keys)
        count[at] += part_count
        total[at] += part_sum
        total_sq[at] += part_sumsq
    return keys, count, total, total_sq


def _join_near(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-item corrections (items, keys, rows) of several parts as one, entries sorted by key."""
    nonempty = [part for part in parts if part[1].size]
    if len(nonempty) <= 1:
        return nonempty[0] if nonempty else parts[0]
    offsets = np.cumsum([0] + [items.shape[0] for items, _, _ in nonempty[:-1]])
    keys = np.concatenate([keys for _, keys, _ in nonempty])
    order = np.argsort(keys, kind="stable")  # a stable sort of sorted runs merges them in linear time
    rows = np.concatenate([rows + offset for (_, _, rows), offset in zip(nonempty, offsets, strict=True)])
    return np.concatenate([items for items, _, _ in nonempty]), keys[order], rows[order]


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

    Per class a, in float64, the class totals: the eligible rows sorted by
    class and summed per run. Then, per item, the classes b too close to its
    own: those (item, b) entries are the corrections, kept per item. O(n d +
    n K) work; callers pass blocks of a few thousand rows, so the float64
    copies stay small.
    """
    n_classes, d = scores.shape[1], x_unit.shape[1]
    empty = PairStats.zeros(n_classes, d)
    labels, top, _ = top_two(scores)
    rows = np.flatnonzero(top >= score_floor) if score_floor is not None else np.arange(top.size)
    rows = rows[np.argsort(labels[rows], kind="stable")]
    count, total, total_sq = np.zeros(n_classes, np.int64), np.zeros((n_classes, d)), np.zeros((n_classes, d))
    near = empty._near()
    if rows.size:
        classes, starts, counts = np.unique(labels[rows], return_index=True, return_counts=True)
        for a, start, n in zip(classes, starts, counts, strict=True):  # np.add.reduceat is 10x slower
            run = x_unit[rows[start : start + n]].astype(np.float64, copy=False)
            count[a] = n
            total[a] = run.sum(axis=0)
            total_sq[a] = np.einsum("ij,ij->j", run, run)
        if pair_margin > 0:
            items, keys, item_rows = _too_close(scores[rows], labels[rows], pair_margin)
            near = x_unit[rows[items]], keys, item_rows
    met = _pairs_met(scores, min(candidates, n_classes)) if candidates is not None else empty.met
    return PairStats(count, total, total_sq, *empty._keyed(), *near, met)._settled()


def _too_close(
    scores: np.ndarray, labels: np.ndarray, pair_margin: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows with some class b within the margin of their own class a, and one entry per such
    (row, b): its key a * K + b and the row's place among those rows, sorted by key."""
    own = np.arange(labels.size)
    gap = scores[own, labels][:, None].astype(np.float64) - scores  # >= 0: labels are the argmax
    too_close = gap < pair_margin
    too_close[own, labels] = False
    row, rival = np.nonzero(too_close)
    keys = labels[row] * scores.shape[1] + rival
    items, places = np.unique(row, return_inverse=True)
    order = np.argsort(keys, kind="stable")
    return items, keys[order], places[order]


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
