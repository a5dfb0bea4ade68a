"""Each class pair's match weights: on its own dimensions only, in padded tables by width, or as full rows
where masks keep most dimensions (``pair_weights`` chooses).

A pair p = (lo, hi) with mask m scores an item x as x . w_p, where
w_p = u_lo*m / |u_lo*m| - u_hi*m / |u_hi*m| (METHOD.md step 5) is zero off the
mask. Masks keep a few dozen of d dimensions (K = 500, d = 768: 54 on
average), so a dense P x d table of weights was 14x larger than its non-zero
entries (380 MB per modality at K = 500) and took seconds to build in every
process that loaded the model. Here each pair keeps (dims, values) of its
mask alone, and an item's score on a pair gathers just those dimensions.

The pairs are stored in a few tables of fixed widths, each pair as one row
padded with value 0 on dimension 0: a match's entries are then one row of
its table, found by a single index, where a compressed (CSR) layout spent
most of a match on working out where each entry lies (K = 500: the tourney's
scores about 2x faster, bit for bit the same). Table widths grow by 1.5x from the
narrowest pair, so padding adds less than half (K = 500: 16% of the entries
the tourney gathers). Masks that keep more than a quarter of the dimensions
(real text embeddings: about 60%) are held as dense rows (``DenseWeights``),
which are then smaller and faster to gather.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pairwise_core.pair_stats import normalize_rows

# Table widths grow by this factor: more tables pad less but cost more calls per gather.
_WIDTH_STEP = 1.5
# Entries gathered at a time: the gathered values and their indices stay in cache.
_GATHER_ENTRIES = 1 << 16


@dataclass(frozen=True)
class PairWeights:
    """Pair p's weights are row ``slot[p]`` of ``values[table[p]]``, on the dimensions in the same place of
    ``dims[table[p]]``; its first ``widths[p]`` entries are its mask's dims, ascending, the rest padding."""

    widths: np.ndarray  # (P,) int64
    table: np.ndarray  # (P,) int64
    slot: np.ndarray  # (P,) int64
    dims: tuple[np.ndarray, ...]  # per table (P_t, W_t) int32
    values: tuple[np.ndarray, ...]  # per table (P_t, W_t) float32

    @classmethod
    def of(cls, class_unit: np.ndarray, pairs: np.ndarray, masks: np.ndarray) -> PairWeights:
        """The weights of ``pairs`` (P, 2) under ``masks`` (P, d) bool, from unit class rows (K, d).

        A pair whose class is zero on every kept dimension gets that side's
        term 0, as a zero row normalizes to zero.
        """
        n_pairs, d = masks.shape
        pair, dims = np.divmod(np.flatnonzero(masks), d)
        widths = np.bincount(pair, minlength=n_pairs)
        values = np.zeros(pair.size)
        for side, sign in ((0, 1.0), (1, -1.0)):
            kept = class_unit[pairs[pair, side], dims]
            norm = np.sqrt(np.bincount(pair, weights=kept * kept, minlength=n_pairs))
            values += sign * kept / np.where(norm == 0, 1.0, norm)[pair]
        table_widths = _table_widths(widths)
        table = np.searchsorted(table_widths, widths)
        sizes = np.bincount(table, minlength=table_widths.size)
        slot = np.empty(n_pairs, np.int64)  # each pair's row in its table, in pair order
        slot[np.argsort(table, kind="stable")] = np.arange(n_pairs) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        # all tables in one buffer each for dims and values: every entry lands with a single scatter
        ends = np.cumsum(sizes * table_widths)
        row_start = (ends - sizes * table_widths)[table] + slot * table_widths[table]
        at = np.arange(pair.size) + (row_start - (np.cumsum(widths) - widths))[pair]
        dims_flat, values_flat = np.zeros(ends[-1], np.int32), np.zeros(ends[-1], np.float32)
        dims_flat[at], values_flat[at] = dims, values
        dims_tables, value_tables = (
            tuple(part.reshape(-1, width) for part, width in zip(np.split(flat, ends[:-1]), table_widths, strict=True))
            for flat in (dims_flat, values_flat)
        )
        return cls(widths, table, slot, dims_tables, value_tables)

    @property
    def n_pairs(self) -> int:
        return self.widths.size

    def dots(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """For each match i, x[rows[i]] . w_pairs[i] (float64); no loop over items or pairs."""
        out = np.empty(pairs.size)
        for chunk, picked, values in self._gather(x, rows, pairs):
            picked *= values  # padding has value 0
            out[chunk] = _row_sums(picked)
        return out

    def masked_sq_norms(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """For each match i, |x[rows[i]] * m_pairs[i]|^2 (float64): the item's length on the pair's dims."""
        out = np.empty(pairs.size)
        for chunk, picked, _ in self._gather(x, rows, pairs):
            picked *= picked
            picked[np.arange(picked.shape[1]) >= self.widths[pairs[chunk], None]] = 0.0  # padding
            out[chunk] = _row_sums(picked)
        return out

    def _gather(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> Iterator[tuple[np.ndarray, ...]]:
        """Per chunk of the matches of one table: the matches, x on their pairs' rows of dims, and the values there."""
        flat = x.reshape(-1)
        offsets = rows * x.shape[1]
        table, slot = self.table[pairs], self.slot[pairs]
        for t, (dims, values) in enumerate(zip(self.dims, self.values, strict=True)):
            matches = np.flatnonzero(table == t)
            step = max(1, _GATHER_ENTRIES // dims.shape[1])
            for start in range(0, matches.size, step):
                chunk = matches[start : start + step]
                at = slot[chunk]
                yield chunk, np.take(flat, dims[at] + offsets[chunk, None]), values[at]


@dataclass(frozen=True)
class DenseWeights:
    """Every pair's weights as a full row of d, for masks that keep most dimensions.

    Real text embeddings keep about 60% of them (WordNet, 384-d: 230 of 384 a pair): there the sparse table
    takes more bytes than the rows (8 against 4 per kept dimension) and its gathers cost more than a row's.
    """

    weights: np.ndarray  # (P, d) float32 (float64 for the unpruned product)
    masks: np.ndarray  # (P, d) bool

    @classmethod
    def of(cls, class_unit: np.ndarray, pairs: np.ndarray, masks: np.ndarray,
           dtype: type = np.float32) -> DenseWeights:
        """The rows w_p of ``pairs`` (P, 2) under ``masks`` (P, d), computed in float64 steps of _ROWS pairs
        and kept in ``dtype``."""
        weights = np.empty(masks.shape, dtype)
        for start in range(0, len(pairs), _ROWS):
            step = slice(start, start + _ROWS)
            mask = masks[step].astype(np.float64)
            weights[step] = normalize_rows(class_unit[pairs[step, 0]] * mask) - normalize_rows(class_unit[pairs[step, 1]] * mask)
        return cls(weights, masks)

    @property
    def n_pairs(self) -> int:
        return self.weights.shape[0]

    def dots(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """For each match i, x[rows[i]] . w_pairs[i]."""
        return np.einsum("ij,ij->i", x[rows], self.weights[pairs].astype(x.dtype, copy=False)).astype(np.float64)

    def masked_sq_norms(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """For each match i, |x[rows[i]] * m_pairs[i]|^2."""
        picked = np.where(self.masks[pairs], x[rows], 0)
        return np.einsum("ij,ij->i", picked, picked).astype(np.float64)


# Pairs per step of DenseWeights.of: bounds its float64 temporaries
_ROWS = 2048
# Kept dimensions per pair, as a share of d, above which DenseWeights beats PairWeights (bytes and gathers)
DENSE_ABOVE = 0.25


def pair_weights(class_unit: np.ndarray, pairs: np.ndarray, masks: np.ndarray) -> PairWeights | DenseWeights:
    """The cheaper form of the pairs' weights for these masks: sparse while masks keep few dimensions
    (synthetic K = 500: 7% of 768), dense rows when they keep many (real text: 60% of 384)."""
    if masks.size and np.count_nonzero(masks) > DENSE_ABOVE * masks.size:
        return DenseWeights.of(class_unit, pairs, masks)
    return PairWeights.of(class_unit, pairs, masks)


def _table_widths(widths: np.ndarray) -> np.ndarray:
    """Widths from the narrowest pair's up by ``_WIDTH_STEP``, the last the widest pair's."""
    positive = widths[widths > 0]
    narrowest, widest = (int(positive.min()), int(positive.max())) if positive.size else (1, 1)
    table_widths = [narrowest]
    while table_widths[-1] < widest:
        table_widths.append(min(int(np.ceil(table_widths[-1] * _WIDTH_STEP)), widest))
    return np.array(table_widths)


def _row_sums(terms: np.ndarray) -> np.ndarray:
    """Each row's sum in float64, term by term in order: np.add.reduce along a row sums in a pairwise
    order, so the transposed copy is reduced over its first axis instead (the same bits as a running sum)."""
    return np.add.reduce(np.ascontiguousarray(terms.T), axis=0, dtype=np.float64)
