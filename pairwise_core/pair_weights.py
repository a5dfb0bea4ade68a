"""Each class pair's match weights on its own dimensions only: a sparse (CSR) table.

A pair p = (lo, hi) with mask m scores an item x as x . w_p, where
w_p = u_lo*m / |u_lo*m| - u_hi*m / |u_hi*m| (METHOD.md step 5) is zero off the
mask. Masks keep a few dozen of d dimensions (K = 500, d = 768: 54 on
average), so a dense P x d table of weights was 14x larger than its non-zero
entries (380 MB per modality at K = 500) and took seconds to build in every
process that loaded the model. Here each pair keeps (dims, values) of its
mask alone, and an item's score on a pair gathers just those dimensions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairwise_core.pair_stats import normalize_rows


@dataclass(frozen=True)
class PairWeights:
    """Pair p's weights are ``values[indptr[p]:indptr[p + 1]]`` on dimensions ``dims[...]`` (ascending)."""

    indptr: np.ndarray  # (P + 1,) int64
    dims: np.ndarray  # (E,) int32
    values: np.ndarray  # (E,) float32

    @classmethod
    def of(cls, class_unit: np.ndarray, pairs: np.ndarray, masks: np.ndarray) -> PairWeights:
        """The weights of ``pairs`` (P, 2) under ``masks`` (P, d) bool, from unit class rows (K, d).

        A pair whose class is zero on every kept dimension gets that side's
        term 0, as a zero row normalizes to zero.
        """
        n_pairs, d = masks.shape
        pair, dims = np.divmod(np.flatnonzero(masks), d)
        indptr = np.zeros(n_pairs + 1, np.int64)
        np.cumsum(np.bincount(pair, minlength=n_pairs), out=indptr[1:])
        values = np.zeros(pair.size)
        for side, sign in ((0, 1.0), (1, -1.0)):
            kept = class_unit[pairs[pair, side], dims]
            norm = np.sqrt(np.bincount(pair, weights=kept * kept, minlength=n_pairs))
            values += sign * kept / np.where(norm == 0, 1.0, norm)[pair]
        return cls(indptr, dims.astype(np.int32), values.astype(np.float32))

    @property
    def n_pairs(self) -> int:
        return self.indptr.size - 1

    def dots(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """For each match i, x[rows[i]] . w_pairs[i] (float64): one gather of the matches' entries, then
        per-match sums; no loop over items or pairs."""
        match, entry, picked = self._gather(x, rows, pairs)
        return np.bincount(match, weights=picked * self.values[entry], minlength=pairs.size)

    def masked_sq_norms(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> np.ndarray:
        """For each match i, |x[rows[i]] * m_pairs[i]|^2 (float64): the item's length on the pair's dims."""
        match, _, picked = self._gather(x, rows, pairs)
        return np.bincount(match, weights=picked * picked, minlength=pairs.size)

    def _gather(self, x: np.ndarray, rows: np.ndarray, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per entry of the matches' pairs: its match, its place in ``dims``/``values``, and x there."""
        starts = self.indptr[pairs]
        lengths = self.indptr[pairs + 1] - starts
        match = np.repeat(np.arange(pairs.size), lengths)
        first = np.cumsum(lengths) - lengths  # each match's first entry in the gathered run
        entry = np.arange(match.size) + (starts - first)[match]
        return match, entry, np.take(x.reshape(-1), rows[match] * x.shape[1] + self.dims[entry])


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
