"""PairwiseClassifier: zero-shot classification by pairwise cross-variance masks.

One classifier serves one modality. It learns, from unlabelled items and the
class prompt embeddings alone, which dimensions separate each pair of classes
(``masks_``), then labels items by a tourney or round robin of linear matches
restricted to those dimensions. See METHOD.md for the algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from pairwise_core.bracket import Outcome, pair_index, round_robin, tourney
from pairwise_core.cross_ratio import moments_ratio
from pairwise_core.pair_stats import PairStats, normalize_rows, pair_stats, top_two
from pairwise_core.validation import Interval, Options, check_embeddings, check_matrix, check_params, check_rows

STRATEGIES = frozenset({"tourney", "round_robin"})

# Rows per block: big enough for BLAS, small enough that every temporary stays
# under glibc's 32 MB mmap threshold (memory is reused instead of page-faulted
# in afresh, which costs more than the arithmetic on these machines).
BLOCK_ROWS = 4096


class NotFittedError(ValueError):
    """predict was called before the masks were fitted."""


@dataclass(frozen=True)
class Classification:
    """Everything one pass over a chunk yields, per item."""

    base_label: np.ndarray  # int64
    base_score: np.ndarray  # cosine of the base label
    base_margin: np.ndarray  # top-1 minus top-2 cosine
    label: np.ndarray  # int64, pairwise label
    margin: np.ndarray  # confidence of the deciding match, (x . w) / |x * m|, seen from the winner


class PairwiseClassifier:
    """Zero-shot pairwise cross-variance classifier for one modality.

    Parameters
    ----------
    class_embeddings : array (K, d)
        One prompt embedding per class.
    cutoff : float, default 1.05
        A dimension enters a pair's mask when its cross-deviation ratio exceeds
        it. 1.05 was chosen on half of a real catalog (WordNet, MiniLM 384-d)
        and confirmed on the other half; 1.1 (the original's code) keeps too
        few dimensions there. See README.
    min_dims : int, default 32
        Fewest dimensions in a mask: when fewer pass the cutoff, the top ones
        by ratio are kept.
    max_dims : int or None, default None
        Most dimensions in a mask (the top ones by ratio); None for no limit.
    min_items : int, default 5
        Fewest confident items on each side of a pair; below it the pair falls
        back to all dimensions (too little evidence to pick any).
    pair_margin : float, default 0.0
        An item of base class a counts for pair (a, b) only when its cosines
        for a and b differ by at least this: boundary items blur the statistics.
    score_floor : float or None, default None
        Items whose top cosine is below it count for no pair.
    strategy : {"tourney", "round_robin"}, default "tourney"
        Tourney: K - 1 matches per item in a seeded bracket. Round robin:
        all K(K-1)/2 matches, most wins, ties broken by base score.
    seed : int, default 0
        Seeds the bracket order.

    Attributes
    ----------
    n_features_in_ : int
    n_classes_ : int
    stats_ : PairStats
        Accumulated statistics of confident pair members.
    pair_counts_ : ndarray (K, K)
        pair_counts_[a, b]: confident items of a against b.
    ratios_ : ndarray (K, K, d)
        Cross-deviation ratio per pair and dimension (symmetric; NaN on the diagonal).
    masks_ : ndarray (K, K, d) of bool
        Dimensions kept per pair (symmetric; all False on the diagonal).
    fallback_ : ndarray (K, K) of bool
        Pairs that fell back to all dimensions for lack of confident items.
    bracket_ : ndarray (K,)
        The seeded class order of the tourney.
    """

    _constraints = {
        "cutoff": Interval(Real, 0, None),
        "min_dims": Interval(Integral, 1, None),
        "max_dims": Interval(Integral, 1, None, allow_none=True),
        "min_items": Interval(Integral, 1, None),
        "pair_margin": Interval(Real, 0, None),
        "score_floor": Interval(Real, -1, 1, allow_none=True),
        "strategy": Options(STRATEGIES),
        "seed": Interval(Integral, 0, None),
    }

    def __init__(
        self,
        class_embeddings: Any,
        *,
        cutoff: float = 1.05,
        min_dims: int = 32,
        max_dims: int | None = None,
        min_items: int = 5,
        pair_margin: float = 0.0,
        score_floor: float | None = None,
        strategy: str = "tourney",
        seed: int = 0,
    ) -> None:
        self.class_embeddings = class_embeddings
        self.cutoff = cutoff
        self.min_dims = min_dims
        self.max_dims = max_dims
        self.min_items = min_items
        self.pair_margin = pair_margin
        self.score_floor = score_floor
        self.strategy = strategy
        self.seed = seed

    def get_params(self) -> dict[str, Any]:
        """The configuration, as given to __init__ (recorded with each run)."""
        return {name: getattr(self, name) for name in self._constraints}

    # -- fitting -----------------------------------------------------------

    def _validate(self) -> None:
        check_params(self.get_params(), self._constraints)
        if self.max_dims is not None and self.max_dims < self.min_dims:
            raise ValueError(f"max_dims ({self.max_dims}) must be >= min_dims ({self.min_dims})")
        classes = check_embeddings(self.class_embeddings, "class_embeddings")
        self._class_unit = normalize_rows(classes.astype(np.float64))
        self.n_classes_, self.n_features_in_ = classes.shape

    def _reset(self) -> None:
        self._validate()
        self.stats_ = PairStats.zeros(self.n_classes_, self.n_features_in_)
        for name in ("masks_", "ratios_", "pair_counts_", "fallback_", "bracket_"):
            self.__dict__.pop(name, None)

    def pair_stats(self, X: Any, *, into: PairStats | None = None) -> PairStats:
        """Statistics of one chunk (added to ``into`` when given), without changing the classifier (map step)."""
        if not hasattr(self, "stats_"):
            self._reset()
        x = check_matrix(X, "X", n_features=self.n_features_in_)
        classes = self._class_unit.T.astype(x.dtype)
        stats = PairStats.zeros(self.n_classes_, self.n_features_in_) if into is None else into
        for start in range(0, x.shape[0], BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS]
            norms = np.sqrt(check_rows(block, "X", offset=start))
            x_unit = block / norms[:, None].astype(x.dtype)
            pair_stats(x_unit, x_unit @ classes, score_floor=self.score_floor, pair_margin=self.pair_margin,
                       into=stats)
        return stats

    def merge_stats(self, stats: PairStats) -> PairwiseClassifier:
        """Add statistics computed elsewhere (reduce step); call finalize() after."""
        if not hasattr(self, "stats_"):
            self._reset()
        self.stats_ = self.stats_ + stats
        return self

    def partial_fit(self, X: Any) -> PairwiseClassifier:
        """Accumulate the pair statistics of a chunk; call finalize() after the last one."""
        return self.merge_stats(self.pair_stats(X))

    def fit(self, X: Any) -> PairwiseClassifier:
        """Reset, accumulate ``X`` and finalize."""
        self._reset()
        return self.partial_fit(X).finalize()

    def finalize(self) -> PairwiseClassifier:
        """Turn the accumulated statistics into ratios, masks, match weights and a bracket."""
        if not hasattr(self, "stats_"):
            self._reset()
        stats = self.stats_
        counts = stats.count
        # set A of pair (a, b) is stats[a, b]; set B is stats[b, a]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = moments_ratio(
                counts[:, :, None], stats.sum, stats.sumsq,
                counts.T[:, :, None], stats.sum.transpose(1, 0, 2), stats.sumsq.transpose(1, 0, 2),
            )
        off_diagonal = ~np.eye(self.n_classes_, dtype=bool)
        fallback = (np.minimum(counts, counts.T) < self.min_items) & off_diagonal
        ratios = np.where(fallback[:, :, None] | ~off_diagonal[:, :, None], np.nan, ratios)
        self.pair_counts_ = counts.copy()
        self.ratios_ = ratios
        self.fallback_ = fallback
        self.masks_ = self._masks(ratios, fallback, off_diagonal)
        self.bracket_ = np.random.default_rng(self.seed).permutation(self.n_classes_)
        self._pairs, self._pair_index = pair_index(self.n_classes_)
        self._weights = self._match_weights()
        self._mask_dims, self._mask_weights = self._padded_mask_dims()
        return self

    def _masks(self, ratios: np.ndarray, fallback: np.ndarray, off_diagonal: np.ndarray) -> np.ndarray:
        d = self.n_features_in_
        min_dims = min(self.min_dims, d)
        max_dims = d if self.max_dims is None else min(self.max_dims, d)
        masks = ratios > self.cutoff
        # rank dimensions by ratio, highest first; a stable sort of the same
        # ratio vector gives the same order for (a, b) and (b, a)
        order = np.argsort(-np.nan_to_num(ratios, nan=-np.inf), axis=2, kind="stable")
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(d)[None, None, :], axis=2)
        n_pass = masks.sum(axis=2, keepdims=True)
        keep = np.clip(n_pass, min_dims, max_dims)
        masks = rank < keep
        masks[fallback] = True
        masks[~off_diagonal] = False
        return masks

    def _match_weights(self) -> np.ndarray:
        """Column p = u_lo - u_hi: each class embedding masked to the pair's dims, unit length."""
        lo, hi = self._pairs[:, 0], self._pairs[:, 1]
        mask = self.masks_[lo, hi].astype(np.float64)  # (P, d)
        classes = self._class_unit
        u_lo = normalize_rows(classes[lo] * mask)
        u_hi = normalize_rows(classes[hi] * mask)
        return np.ascontiguousarray((u_lo - u_hi).T)  # (d, P)

    def _padded_mask_dims(self) -> tuple[np.ndarray, np.ndarray]:
        """Each pair's kept dimensions as a row of indices, padded with weight 0."""
        pair_masks = self.masks_[self._pairs[:, 0], self._pairs[:, 1]]
        width = max(int(pair_masks.sum(axis=1).max(initial=0)), 1)
        # stable sort puts each pair's kept dimensions first, in index order
        dims = np.argsort(~pair_masks, axis=1, kind="stable")[:, :width]
        weights = np.take_along_axis(pair_masks, dims, axis=1).astype(np.float32)
        return dims, weights

    # -- prediction --------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "masks_"):
            raise NotFittedError("PairwiseClassifier is not fitted: call fit(), or partial_fit() then finalize()")

    def base_scores(self, X: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Full-embedding cosine argmax: (labels, top cosine, top-1 minus top-2)."""
        if not hasattr(self, "_class_unit"):
            self._validate()
        x = check_embeddings(X, "X", n_features=self.n_features_in_)
        return top_two(normalize_rows(x) @ self._class_unit.T.astype(x.dtype))

    def predict_base(self, X: Any) -> np.ndarray:
        """Base labels: full-embedding cosine argmax (no fitting needed)."""
        return self.base_scores(X)[0]

    def predict(self, X: Any, *, return_margin: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Pairwise labels; with ``return_margin``, also the deciding match's confidence."""
        result = self.classify(X)
        return (result.label, result.margin) if return_margin else result.label

    def classify(self, X: Any) -> Classification:
        """Base and pairwise labels with scores and margins, in one pass over ``X``.

        Per block of rows, one matrix product scores every item against every
        class and every pair at once; the bracket then only gathers from it.
        Rows are validated block by block, while they are in cache.
        """
        self._check_fitted()
        x = check_matrix(X, "X", n_features=self.n_features_in_)
        k = self.n_classes_
        both = np.concatenate([self._class_unit.T, self._weights], axis=1).astype(x.dtype)
        parts = []
        for start in range(0, x.shape[0], BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS]
            norms = np.sqrt(check_rows(block, "X", offset=start))
            scores = block @ both
            cosines = scores[:, :k] / norms[:, None]
            base_label, base_score, base_margin = top_two(cosines)
            outcome = self._play(scores[:, k:], cosines)
            margin = self._normalize_margin(block, outcome)
            parts.append((base_label, base_score, base_margin, outcome.labels, margin))
        return Classification(*(np.concatenate(column) for column in zip(*parts)))

    def _play(self, pair_scores: np.ndarray, cosines: np.ndarray) -> Outcome:
        if self.strategy == "tourney":
            return tourney(pair_scores, self._pair_index, self.bracket_)
        return round_robin(pair_scores, self._pairs, self._pair_index, cosines)

    def _normalize_margin(self, block: np.ndarray, outcome: Outcome) -> np.ndarray:
        """(x . w) / |x * m| for each item's deciding match (METHOD.md step 5).

        |x * m| gathers only the pair's own dimensions (padded index lists),
        not a full-width mask row per item.
        """
        played = outcome.pair_column >= 0
        margin = np.full(block.shape[0], np.nan, dtype=block.dtype)
        if played.any():
            rows = np.flatnonzero(played)
            column = outcome.pair_column[rows]
            d = block.shape[1]
            flat = self._mask_dims[column] + (rows * d)[:, None]
            picked = np.take(block.reshape(-1), flat) * self._mask_weights[column]
            masked_norm = np.sqrt(np.einsum("ij,ij->i", picked, picked))
            with np.errstate(divide="ignore", invalid="ignore"):
                margin[rows] = np.where(masked_norm > 0, outcome.winner_score[rows] / masked_norm, 0.0)
        return margin
