"""PairwiseClassifier: zero-shot classification by pairwise cross-variance masks.

One classifier serves one modality. It learns, from unlabelled items and the
class prompt embeddings alone, which dimensions separate each pair of classes
(``masks_``), then labels items by a tourney or round robin of linear matches
restricted to those dimensions. See METHOD.md for the algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from pairwise_core.bracket import (
    OnDemand, Outcome, Referee, ScoreTable, pair_index, round_robin, seeded_slots, tourney,
)
from pairwise_core.cross_ratio import moments_ratio, spread, spread_in_place, spread_ratio, top_n
from pairwise_core.pair_weights import DenseWeights, pair_weights
from pairwise_core.pair_stats import PairStats, normalize_rows, pair_stats, top_two
from pairwise_core.validation import Interval, Options, check_embeddings, check_matrix, check_params, check_rows

STRATEGIES = frozenset({"tourney", "round_robin"})

# Rows per block: big enough for BLAS, small enough that every temporary stays
# under glibc's 32 MB mmap threshold (memory is reused instead of page-faulted
# in afresh, which costs more than the arithmetic on these machines).
BLOCK_ROWS = 4096
# Pairs per step of the mask fit: bounds its float64 working set (measured at K = 500, d = 768)
_RATIO_CHUNK = 256
# With pruning, pass 1 records the pairs among each item's top (_MET_NET x m)
# classes by base score: predict picks its m candidates by a sharper score
# that is only known after pass 1, so the net is cast wider. A pair that
# still meets without a mask is played on the full embedding.
_MET_NET = 2
# A run prunes by default above PRUNE_ABOVE classes, to each item's top DEFAULT_CANDIDATES
# (default_candidates): unpruned, every block scores all K(K-1)/2 pairs, so at K = 330 one labelling of
# the catalog took 58 s against 4 s pruned, with the same gold accuracy on the WordNet taxonomy catalog
# (title 0.1808 both, gloss 0.3352 against 0.3349; docs/performance.md). Below it the exact tourney is cheap.
PRUNE_ABOVE = 64
DEFAULT_CANDIDATES = 16


def _top_columns(scores: np.ndarray, m: int) -> np.ndarray:
    """Each row's m top-scoring columns, in column order; of columns tied at the m-th score, the first.

    A partition finds each row's m-th score and the columns at or above it
    come out of one np.nonzero already in order: np.argpartition over the
    columns, then sorting the m of each row, cost 2.5x as much (K = 500).
    """
    k = scores.shape[1]
    threshold = np.partition(scores, k - m, axis=1)[:, k - m, None]
    keep = scores >= threshold  # at least m per row
    if np.count_nonzero(keep) > keep.shape[0] * m:
        above = scores > threshold
        keep &= above | (np.cumsum(keep & ~above, axis=1) <= m - np.count_nonzero(above, axis=1)[:, None])
    return np.nonzero(keep)[1].reshape(-1, m)


def default_candidates(n_classes: int) -> int | None:
    """The ``candidates`` a run uses when not told: None (every class plays) up to ``PRUNE_ABOVE`` classes,
    else ``DEFAULT_CANDIDATES``."""
    return DEFAULT_CANDIDATES if n_classes > PRUNE_ABOVE else None


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
    # evidence against a given label (classify(X, given=...)); NaN where no label was given
    given_gap: np.ndarray | None = None  # top base cosine minus the given label's (0: base agrees)
    given_h2h: np.ndarray | None = None  # the pairwise label's normalized margin over the given label, head to head
    # (n, K) cosine of each item to each class and (n, m) products of the unit rows with further directions, in
    # the items' dtype (classify(X, directions=...)): the refinement's terms are finished from them
    # (MixtureRefiner.log_terms_of) instead of being taken again
    cosines: np.ndarray | None = None
    products: np.ndarray | None = None


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
        back to all dimensions (too little evidence to pick any). At least 2:
        one item has no spread, so every ratio would be infinite.
    pair_margin : float, default 0.0
        An item of base class a counts for pair (a, b) only when its cosines
        for a and b differ by at least this: boundary items blur the statistics.
    score_floor : float or None, default None
        Items whose top cosine is below it count for no pair.
    strategy : {"tourney", "round_robin"}, default "tourney"
        Tourney: K - 1 matches per item in a seeded bracket, padded to a
        power of two with the byes in round 1 (``bracket_slots_``). Round robin:
        all K(K-1)/2 matches, most wins, ties broken by base score.
    candidates : int or None, default None
        Candidate pruning for many classes: only an item's top ``candidates``
        classes by base score enter its bracket (in the seeded bracket order),
        and masks are fitted only for pairs that meet among some item's
        candidates. None: every class plays.
    seed : int, default 0
        Seeds the bracket order and where its byes fall.

    Attributes
    ----------
    n_features_in_ : int
    n_classes_ : int
    stats_ : PairStats
        Accumulated statistics of confident pair members.
    bracket_ : ndarray (K,)
        The seeded class order of the tourney.
    bracket_slots_ : ndarray (2**ceil(log2 T),)
        The tourney's slots over the T teams of an item's bracket (all K
        classes in ``bracket_`` order, or its ``candidates`` classes in that
        order): the team in each slot, -1 for a bye.
    pairs_ : ndarray (P, 2)
        The class pairs (lo < hi) that have masks: all of them, or those that meet.
    pair_masks_ : ndarray (P, d) of bool
        Dimensions kept per pair.
    pair_ratios_ : ndarray (P, d) of float32
        Cross-deviation ratio per pair and dimension (NaN for fallback pairs),
        computed from ``stats_`` when read.
    pair_counts_ab_ : ndarray (P, 2)
        Confident items of lo against hi, and of hi against lo.
    pair_fallback_ : ndarray (P,) of bool
        Pairs that fell back to all dimensions for lack of confident items.
    masks_, ratios_, pair_counts_, fallback_ : dense K x K (x d) views of the
        above, for inspection with few classes.
    """

    _constraints = {
        "cutoff": Interval(Real, 0, None),
        "min_dims": Interval(Integral, 1, None),
        "max_dims": Interval(Integral, 1, None, allow_none=True),
        "min_items": Interval(Integral, 2, None),
        "pair_margin": Interval(Real, 0, None),
        "score_floor": Interval(Real, -1, 1, allow_none=True),
        "strategy": Options(STRATEGIES),
        "candidates": Interval(Integral, 2, None, allow_none=True),
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
        candidates: int | None = None,
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
        self.candidates = candidates
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
        for name in ("pair_masks_", "pair_counts_ab_", "pair_fallback_", "pairs_", "bracket_", "bracket_slots_"):
            self.__dict__.pop(name, None)

    @property
    def _pruned(self) -> bool:
        return self.candidates is not None and self.candidates < self.n_classes_

    def pair_stats(self, X: Any) -> PairStats:
        """Statistics of one chunk, without changing the classifier (map step)."""
        if not hasattr(self, "stats_"):
            self._reset()
        x = check_matrix(X, "X", n_features=self.n_features_in_)
        classes = self._class_unit.T.astype(x.dtype)

        def blocks() -> Iterator[PairStats]:
            for start in range(0, x.shape[0], BLOCK_ROWS):
                block = x[start : start + BLOCK_ROWS]
                norms = np.sqrt(check_rows(block, "X", offset=start))
                x_unit = block / norms[:, None].astype(x.dtype)
                yield pair_stats(
                    x_unit, x_unit @ classes, score_floor=self.score_floor, pair_margin=self.pair_margin,
                    candidates=min(_MET_NET * self.candidates, self.n_classes_) if self._pruned else None,
                )

        return PairStats.merge(blocks())  # one merge of all blocks, not one per block

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
        """Turn the accumulated statistics into masks, match weights and a bracket."""
        if not hasattr(self, "stats_"):
            self._reset()
        k, d = self.n_classes_, self.n_features_in_
        if self._pruned:
            lo, hi = np.divmod(self.stats_.met, k)
        else:
            lo, hi = np.triu_indices(k, k=1)
        self.pairs_ = np.stack([lo, hi], axis=1).astype(np.int64)
        n_pairs = len(self.pairs_)
        self.pair_masks_ = np.zeros((n_pairs, d), dtype=bool)
        self.pair_counts_ab_ = np.zeros((n_pairs, 2), dtype=np.int64)
        self.pair_fallback_ = np.zeros(n_pairs, dtype=bool)
        for chunk, (ratios, counts, fallback) in self._pair_ratios():
            self.pair_masks_[chunk] = self._masks(ratios, fallback)
            self.pair_counts_ab_[chunk] = counts
            self.pair_fallback_[chunk] = fallback
        rng = np.random.default_rng(self.seed)
        self.bracket_ = rng.permutation(k)
        self.bracket_slots_ = seeded_slots(self.candidates if self._pruned else k, rng)
        self._derive()
        return self

    def _pair_chunks(self) -> Iterator[slice]:
        """The pairs in chunks: per-pair work on (chunk, d) float64 arrays keeps its temporaries small."""
        for start in range(0, len(self.pairs_), _RATIO_CHUNK):
            yield slice(start, start + _RATIO_CHUNK)

    def _pair_ratios(self) -> Iterator[tuple[slice, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
        """Per chunk of pairs: ratios (NaN for fallback pairs), confident counts (lo, hi) and fallback.

        A pair's side is its class's totals unless the pair margin corrected
        them, so each class's mean, variance and spread are worked out once and
        gathered per pair; only corrected sides are worked out per pair. The
        ratios of one chunk are overwritten by the next: use them before.
        """
        stats = self.stats_
        per_class = spread(stats.count[:, None], stats.sum, stats.sumsq)
        buffers = np.empty((6, min(_RATIO_CHUNK, len(self.pairs_)), self.n_features_in_))  # reused: no page faults
        for chunk in self._pair_chunks():
            lo, hi = self.pairs_[chunk, 0], self.pairs_[chunk, 1]
            sides = buffers[:, : lo.size]
            counts = []
            for side, (a, b) in zip((sides[:3], sides[3:]), ((lo, hi), (hi, lo)), strict=True):
                for array, out in zip(per_class, side, strict=True):
                    np.take(array, a, axis=0, out=out, mode="clip")  # "raise" would buffer a copy: 3x slower
                count = stats.count[a]
                rows, n, total, total_sq = stats.corrected(a, b)
                if rows.size:
                    count[rows] = n
                    for out, value in zip(side, spread_in_place(n[:, None], total, total_sq), strict=True):
                        out[rows] = value
                counts.append(count)
            ratios = spread_ratio(*sides)
            fallback = np.minimum(*counts) < self.min_items
            ratios[fallback] = np.nan
            yield chunk, (ratios, np.stack(counts, axis=1), fallback)

    def _derive(self) -> None:
        """Match weights w_p = u_lo - u_hi (each class embedding masked to the pair's dims, unit length),
        the pair lookup and the candidates' columns.

        Every pair's weights, sparse or dense as its masks say (``pair_weights``),
        score pruned matches and give each deciding match its masked length.
        Fallback pairs keep every dim and are played on the cosines instead.
        Unpruned, a dense float64 (P, d) copy also scores every pair of a block in
        one product (few classes: P is small).
        """
        self._pair_weights = pair_weights(self._class_unit, self.pairs_, self.pair_masks_ & ~self.pair_fallback_[:, None])
        self._index = pair_index(self.pairs_, self.n_classes_)
        if self._pruned:
            self._candidate_columns, self._candidate_masks = self._class_vs_rest()
        else:
            self._weights = DenseWeights.of(self._class_unit, self.pairs_, self.pair_masks_, np.float64).weights

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The fitted state labelling needs, as plain arrays and JSON-able parameters (``from_arrays``).

        Left out: what prediction derives from the masks (``_derive``: the
        weights on each pair's dims, K = 500: 68 MB per modality, padded) and the pair margin's corrections in the statistics, which
        labelling never reads (K = 500: about 0.3 GB per modality): only
        fitting and ``pair_ratios_`` do, which the loaded copy refuses.
        The masks are packed 8 to a byte (``pair_mask_bits``): as booleans they were 96 of the 109 MB a
        K = 500, 768-d classifier took.
        """
        self._check_fitted()
        stats = self.stats_
        return {
            "class_embeddings": np.asarray(self.class_embeddings), "count": stats.count, "sum": stats.sum,
            "sumsq": stats.sumsq, "met": stats.met, "pairs": self.pairs_,
            "pair_mask_bits": np.packbits(self.pair_masks_, axis=1),
            "pair_counts_ab": self.pair_counts_ab_, "pair_fallback": self.pair_fallback_,
            "bracket": self.bracket_, "bracket_slots": self.bracket_slots_,
        }, {"params": self.get_params()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> PairwiseClassifier:
        """A fitted classifier that labels exactly as the one ``to_arrays`` was called on."""
        model = cls(arrays["class_embeddings"], **state["params"])
        model._validate()
        totals = PairStats.zeros(model.n_classes_, model.n_features_in_)
        model.stats_ = dataclasses.replace(totals, count=arrays["count"], sum=arrays["sum"], sumsq=arrays["sumsq"],
                                           met=arrays["met"])
        model.pairs_, model.pair_masks_ = arrays["pairs"], _unpacked_masks(arrays, model.n_features_in_)
        model.pair_counts_ab_, model.pair_fallback_ = arrays["pair_counts_ab"], arrays["pair_fallback"]
        model.bracket_, model.bracket_slots_ = arrays["bracket"], arrays["bracket_slots"]
        model._labelling_only = True
        model._derive()
        return model

    def _class_vs_rest(self) -> tuple[np.ndarray, np.ndarray]:
        """Per class, the dims that separate its items from all others' (the same mask rule as pairs).

        Candidates are ranked by the cosine on those dims: base cosines are
        swamped by dims no class owns, and pruning keeps only what its ranking
        finds (top-8 recall 0.855 -> 0.986 on a 200-class synthetic catalog,
        0.784 -> 0.824 on the WordNet glosses, 0.641 -> 0.636 on their titles).
        """
        stats = self.stats_
        rest_count = stats.count.sum() - stats.count
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = moments_ratio(
                stats.count[:, None], stats.sum, stats.sumsq,
                rest_count[:, None], stats.sum.sum(axis=0) - stats.sum, stats.sumsq.sum(axis=0) - stats.sumsq,
            )
        fallback = np.minimum(stats.count, rest_count) < self.min_items
        ratios[fallback] = np.nan
        masks = self._masks(ratios, fallback)
        columns = normalize_rows(self._class_unit * masks)
        return columns.astype(np.float32), masks.astype(np.float32)

    def _masks(self, ratios: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Dimensions with ratio > cutoff; rows with fewer than min_dims or more than max_dims keep
        their top-N by ratio instead (ties to the lower dimension). Only those rows are ranked."""
        d = self.n_features_in_
        min_dims = min(self.min_dims, d)
        max_dims = d if self.max_dims is None else min(self.max_dims, d)
        masks = ratios > self.cutoff  # NaN compares False
        n_above = np.count_nonzero(masks, axis=1)
        for keep, out_of_range in ((min_dims, n_above < min_dims), (max_dims, n_above > max_dims)):
            rows = np.flatnonzero(out_of_range & ~fallback)
            if rows.size:
                masks[rows] = top_n(ratios[rows], keep)
        masks[fallback] = True
        return masks

    # -- dense views (few classes) ------------------------------------------

    def _dense(self, values: np.ndarray, fill: Any) -> np.ndarray:
        k = self.n_classes_
        dense = np.full((k, k, *values.shape[1:]), fill, dtype=values.dtype)
        lo, hi = self.pairs_[:, 0], self.pairs_[:, 1]
        dense[lo, hi] = values
        dense[hi, lo] = values
        return dense

    @property
    def masks_(self) -> np.ndarray:
        """(K, K, d) bool, symmetric, all False on the diagonal and for pairs that never meet."""
        return self._dense(self.pair_masks_, False)

    @property
    def pair_ratios_(self) -> np.ndarray:
        """(P, d) float32 cross-deviation ratios, computed from the statistics when asked for (with
        many classes they are P x d floats that prediction never needs)."""
        self._check_fitted()
        if getattr(self, "_labelling_only", False):
            raise ValueError("this copy of the classifier is for labelling (from_arrays): its statistics lack the "
                             "pair margin's corrections the ratios need")
        ratios = np.empty(self.pair_masks_.shape, dtype=np.float32)
        for chunk, (chunk_ratios, _, _) in self._pair_ratios():
            ratios[chunk] = chunk_ratios
        return ratios

    @property
    def ratios_(self) -> np.ndarray:
        """(K, K, d) cross-deviation ratios, symmetric, NaN where undefined."""
        return self._dense(self.pair_ratios_, np.nan)

    @property
    def fallback_(self) -> np.ndarray:
        """(K, K) bool: pairs that fell back to all dimensions."""
        return self._dense(self.pair_fallback_, False)

    @property
    def pair_counts_(self) -> np.ndarray:
        """(K, K): [a, b] confident items of a against b; the diagonal holds each class's confident items."""
        counts = np.diag(self.stats_.count).astype(np.int64)
        lo, hi = self.pairs_[:, 0], self.pairs_[:, 1]
        counts[lo, hi] = self.pair_counts_ab_[:, 0]
        counts[hi, lo] = self.pair_counts_ab_[:, 1]
        return counts

    # -- prediction --------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "pair_masks_"):
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

    def classify(self, X: Any, *, given: Any = None, directions: np.ndarray | None = None,
                 square_norms: np.ndarray | None = None) -> Classification:
        """Base and pairwise labels with scores and margins, in one pass over ``X``.

        Per block of rows, one matrix product scores every item against every
        class, and (without pruning) every pair too; the bracket then only
        gathers. With pruning, only the matches played are scored.
        Rows are validated block by block, while they are in cache.

        ``given`` (class indices, -1 for none) asks for the evidence against
        each item's current label too: a catalog's labels are reviewed in the
        same pass that makes the new ones. ``directions`` (m, d) are scored in the same product: the unit
        rows' products with them (``Classification.products``) and every item's cosines to every class
        (``Classification.cosines``) are kept. ``square_norms`` (n,): the rows' square norms, if the caller
        computed them as ``check_rows`` does to validate the rows itself: checked, not computed again.
        """
        self._check_fitted()
        x = check_matrix(X, "X", n_features=self.n_features_in_)
        codes = None if given is None else self._check_given(given, x.shape[0])
        square_norms = None if square_norms is None else np.asarray(square_norms, x.dtype)
        k = self.n_classes_
        # pruned, the class-vs-rest columns come in bracket order: an item's top candidates are then picked in it
        extra = self._candidate_columns[self.bracket_] if self._pruned else self._weights
        more = np.zeros((0, x.shape[1]), x.dtype) if directions is None else np.asarray(directions, x.dtype)
        if more.ndim != 2 or more.shape[1] != x.shape[1]:
            raise ValueError(f"directions must be of shape (m, {x.shape[1]}), got {more.shape}")
        columns = np.concatenate([self._class_unit.astype(x.dtype), extra.astype(x.dtype, copy=False), more])
        scored = k + len(extra)  # the columns the bracket reads; the directions' come after them
        if self._pruned:
            candidate_masks = self._candidate_masks[self.bracket_].T.astype(x.dtype, copy=False)
        parts, kept, products = [], [], []
        for start in range(0, x.shape[0], BLOCK_ROWS):
            block = x[start : start + BLOCK_ROWS]
            given_squares = None if square_norms is None else square_norms[start : start + BLOCK_ROWS]
            norms = np.sqrt(check_rows(block, "X", offset=start, square_norms=given_squares))
            scores = block @ columns.T
            cosines = scores[:, :k] / norms[:, None]
            base_label, base_score, base_margin = top_two(cosines)
            if self._pruned:
                referee: Referee = OnDemand(block, self._pair_weights, self.pair_fallback_, self._index, cosines, norms)
                candidate_scores = np.sqrt((block * block) @ candidate_masks)  # masked norms, then scores in place
                with np.errstate(divide="ignore", invalid="ignore"):
                    np.divide(scores[:, k:scored], candidate_scores, out=candidate_scores)
                np.nan_to_num(candidate_scores, copy=False, nan=-np.inf)
                candidates = self.bracket_[_top_columns(candidate_scores, self.candidates)]
            else:
                referee = ScoreTable(scores, self._index, offset=k)
                candidates = None
            outcome = self._play(referee, cosines, candidates)
            margin = self._normalize_margin(block, norms, outcome)
            part = (base_label, base_score, base_margin, outcome.labels, margin)
            if codes is not None:
                part += self._against_given(
                    referee, block, norms, cosines, base_score, outcome.labels, codes[start : start + len(block)]
                )
            parts.append(part)
            if directions is not None:
                kept.append(cosines)
                products.append(scores[:, scored:] / norms[:, None])
        result = Classification(*(np.concatenate(column) for column in zip(*parts)))
        if directions is None:
            return result
        return dataclasses.replace(result, cosines=np.concatenate(kept), products=np.concatenate(products))

    def _check_given(self, given: Any, n: int) -> np.ndarray:
        codes = np.asarray(given)
        if codes.shape != (n,) or codes.dtype.kind not in "iu":
            raise ValueError(f"given must be {n} class indices (-1 for none), got {codes.dtype} of shape {codes.shape}")
        if codes.size and (codes.min() < -1 or codes.max() >= self.n_classes_):
            raise ValueError(f"given holds class indices outside -1..{self.n_classes_ - 1}")
        return codes.astype(np.int64)

    def _against_given(
        self, referee: Referee, block: np.ndarray, norms: np.ndarray, cosines: np.ndarray, base_score: np.ndarray,
        labels: np.ndarray, given: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(given_gap, given_h2h): how far the given label trails the base winner, and how the
        pairwise winner fares against it in their own match (same normalization as the margin)."""
        rows = np.arange(len(given))
        known = given >= 0
        g = np.where(known, given, 0)
        gap = np.where(known, base_score - cosines[rows, g], np.nan)
        differ = known & (labels != g)
        if not differ.any():
            return gap.astype(np.float32), np.where(known, 0.0, np.nan).astype(np.float32)
        # rows with no match to play still need a real pair (a referee has none for (a, a)): any other
        # class stands in, and its score is discarded below
        opponent = np.where(differ, g, (labels + 1) % self.n_classes_)
        column, score = referee.seen_from(labels[:, None], opponent[:, None])
        played = Outcome(labels, column[:, 0], np.where(differ, score[:, 0], np.nan))
        h2h = np.where(differ, self._normalize_margin(block, norms, played), np.where(known, 0.0, np.nan))
        return gap.astype(np.float32), h2h.astype(np.float32)

    def _play(self, referee: Referee, cosines: np.ndarray, candidates: np.ndarray | None) -> Outcome:
        n = cosines.shape[0]
        if self.strategy == "tourney":
            holders = np.broadcast_to(self.bracket_, (n, self.n_classes_)) if candidates is None else candidates
            return tourney(referee, holders, self.bracket_slots_)
        everyone = np.broadcast_to(np.arange(self.n_classes_), (n, self.n_classes_))
        return round_robin(referee, everyone if candidates is None else candidates, cosines)

    def _normalize_margin(self, block: np.ndarray, norms: np.ndarray, outcome: Outcome) -> np.ndarray:
        """(x . w) / |x * m| for each item's deciding match (METHOD.md step 5).

        |x * m| gathers only the pair's own dimensions, not a full-width mask
        row per item; fallback pairs and pairs played on the full embedding
        use |x|.
        """
        margin = np.full(block.shape[0], np.nan, dtype=block.dtype)
        played = np.isfinite(outcome.winner_score)
        if not played.any():
            return margin
        column = outcome.pair_column
        full = played & (column < 0)  # a pair that never met: no mask, no fallback flag
        known = np.flatnonzero(column >= 0)
        full[known] |= self.pair_fallback_[column[known]]
        masked = np.flatnonzero(played & ~full)
        norm = norms.astype(np.float64)
        if masked.size:
            norm[masked] = np.sqrt(self._pair_weights.masked_sq_norms(block, masked, column[masked]))
        with np.errstate(divide="ignore", invalid="ignore"):
            margin[played] = np.where(norm[played] > 0, outcome.winner_score[played] / norm[played], 0.0)
        return margin


def _unpacked_masks(arrays: dict[str, np.ndarray], n_features: int) -> np.ndarray:
    """The pair masks (P, d) of bool from ``to_arrays``' packed bits, or as a model stored before them holds
    them (``pair_masks``, booleans)."""
    if "pair_masks" in arrays:
        return arrays["pair_masks"]
    return np.unpackbits(arrays["pair_mask_bits"], axis=1, count=n_features).view(bool)
