"""Who wins: the array tourney and the round robin, over precomputed match scores.

Both take ``pair_scores`` of shape (n, P): column p holds x . w_p for the
class pair ``pairs[p] = (lo, hi)`` with lo < hi and w_p = u_lo - u_hi
(METHOD.md step 5). So lo wins iff the score is >= 0, and hi wins iff it is
<= 0 (seen from hi, the score is negated). A tie goes to the team named
first in the match. Nothing here loops over items: every round is a handful
of array operations on all items at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Outcome:
    """Per item: the label, and the deciding match as (pair column, score seen from the winner)."""

    labels: np.ndarray
    pair_column: np.ndarray  # -1 when there was no match (K = 1)
    winner_score: np.ndarray


def pair_index(n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (lo, hi) in row-major order, and the K x K lookup of their column."""
    lo, hi = np.triu_indices(n_classes, k=1)
    index = np.full((n_classes, n_classes), -1, dtype=np.int64)
    index[lo, hi] = np.arange(lo.size)
    index[hi, lo] = np.arange(lo.size)
    return np.stack([lo, hi], axis=1), index


def _seen_from(pair_scores: np.ndarray, index: np.ndarray, a: np.ndarray, b: np.ndarray):
    """Column of the match a vs b, and its score seen from a (>= 0 means a wins)."""
    column = index[a, b]
    n, n_pairs = pair_scores.shape
    flat = column + (np.arange(n) * n_pairs)[:, None]  # a flat take is faster than take_along_axis
    score = np.take(pair_scores.reshape(-1), flat)
    return column, np.where(a < b, score, -score)


def _play(pair_scores: np.ndarray, index: np.ndarray, first: np.ndarray, second: np.ndarray):
    """One match per (item, slot): returns winner, column and score seen from the winner."""
    column, seen_from_first = _seen_from(pair_scores, index, first, second)
    first_wins = seen_from_first >= 0
    return np.where(first_wins, first, second), column, np.abs(seen_from_first)


def tourney(pair_scores: np.ndarray, index: np.ndarray, bracket: np.ndarray) -> Outcome:
    """The array tourney of METHOD.md step 6, with ``bracket`` the seeded class order.

    Each round pairs slots (0, 1), (2, 3), ...; an odd last slot gets a bye
    and moves on as the last slot of the next round. K - 1 matches per item.
    """
    n = pair_scores.shape[0]
    holders = np.broadcast_to(bracket, (n, bracket.size))
    column = np.full(n, -1, dtype=np.int64)
    winner_score = np.full(n, np.nan, dtype=pair_scores.dtype)
    while holders.shape[1] > 1:
        paired = holders.shape[1] // 2 * 2
        winners, cols, scores = _play(pair_scores, index, holders[:, 0:paired:2], holders[:, 1:paired:2])
        holders = np.concatenate([winners, holders[:, paired:]], axis=1)
        if holders.shape[1] == 1:
            column, winner_score = cols[:, 0], scores[:, 0]
    return Outcome(np.ascontiguousarray(holders[:, 0]), column, winner_score)


def round_robin(pair_scores: np.ndarray, pairs: np.ndarray, index: np.ndarray, base_scores: np.ndarray) -> Outcome:
    """Every pair plays once; most wins takes it, ties broken by the base score.

    The deciding match reported is the winner's match against the runner-up
    (the next class by the same ordering): the closest thing to a final.
    """
    n, n_classes = base_scores.shape
    if n_classes == 1:
        return Outcome(np.zeros(n, np.int64), np.full(n, -1, np.int64), np.full(n, np.nan, pair_scores.dtype))
    signed_incidence = np.zeros((pairs.shape[0], n_classes), dtype=np.float32)
    rows = np.arange(pairs.shape[0])
    signed_incidence[rows, pairs[:, 0]] = 1.0
    signed_incidence[rows, pairs[:, 1]] = -1.0
    lo_wins = (pair_scores >= 0).astype(np.float32)
    # wins of class k = (matches lo won as k) + (matches k played as hi) - (matches lo won against k)
    wins = lo_wins @ signed_incidence + np.bincount(pairs[:, 1], minlength=n_classes).astype(np.float32)
    # base scores are cosines in [-1, 1]: scaled into [0, 0.5] they only break ties between win counts
    key = wins.astype(np.float64) + (base_scores.astype(np.float64) + 1.0) / 4.0
    best = np.argmax(key, axis=1)
    key[np.arange(n), best] = -np.inf
    runner_up = np.argmax(key, axis=1)
    column, seen_from_best = _seen_from(pair_scores, index, best[:, None], runner_up[:, None])
    return Outcome(best, column[:, 0], seen_from_best[:, 0])
