"""Who wins: the array tourney and the round robin.

A match between classes a and b is scored x . w_p for the pair p = (lo, hi),
lo < hi, with w_p = u_lo - u_hi (METHOD.md step 5): lo wins iff the score is
>= 0, and hi wins iff it is <= 0 (seen from hi the score is negated). A tie
goes to the team named first in the match. Nothing here loops over items:
every round is a handful of array operations on all items at once.

Where scores come from is a referee's business: a table of every pair's
score (few classes: one matrix product scored them all), or scores computed
on demand for just the pairs that meet (many classes, pruned candidates).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

_GATHER_ROWS = 512


@dataclass(frozen=True)
class Outcome:
    """Per item: the label, and the deciding match as (pair column, score seen from the winner)."""

    labels: np.ndarray
    pair_column: np.ndarray  # -1 when there was no match (K = 1) or the pair has no weights
    winner_score: np.ndarray


class Referee(Protocol):
    def seen_from(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For (n, t) arrays of classes: the pair column of each match, and its score seen from a."""
        ...


def pair_index(pairs: np.ndarray, n_classes: int) -> np.ndarray:
    """The K x K lookup from a class pair (either order) to its row in ``pairs``; -1 where absent."""
    index = np.full((n_classes, n_classes), -1, dtype=np.int64)
    index[pairs[:, 0], pairs[:, 1]] = np.arange(len(pairs))
    index[pairs[:, 1], pairs[:, 0]] = np.arange(len(pairs))
    return index


@dataclass(frozen=True)
class ScoreTable:
    """Every pair's score precomputed: (n, P), column p for pair p."""

    pair_scores: np.ndarray
    index: np.ndarray

    def seen_from(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        column = self.index[a, b]
        n, n_pairs = self.pair_scores.shape
        flat = column + (np.arange(n) * n_pairs)[:, None]  # a flat take is faster than take_along_axis
        score = np.take(self.pair_scores.reshape(-1), flat)
        return column, np.where(a < b, score, -score)


@dataclass(frozen=True)
class OnDemand:
    """Scores of just the matches played, one gathered dot product per item and match slot.

    A pair without weights (never met while fitting) is played on the full
    embedding: |x| (cos_lo - cos_hi), the sign of the plain cosine comparison.
    """

    x: np.ndarray  # (n, d) items
    weights: np.ndarray  # (P, d): row p = w_p
    index: np.ndarray
    cosines: np.ndarray  # (n, K)
    norms: np.ndarray  # (n,)

    def seen_from(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        column = self.index[a, b]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        rows = np.arange(a.shape[0])[:, None]
        score = (self.cosines[rows, lo] - self.cosines[rows, hi]) * self.norms[:, None]
        for slot in range(a.shape[1]):  # a few slots per round, never a loop over items
            # sub-blocks keep the gathered weight rows in cache
            for start in range(0, a.shape[0], _GATHER_ROWS):
                col = column[start : start + _GATHER_ROWS, slot]
                known = col >= 0
                x = self.x[start : start + _GATHER_ROWS]
                if known.all():
                    score[start : start + _GATHER_ROWS, slot] = np.einsum("ij,ij->i", x, self.weights[col])
                elif known.any():
                    rows = np.flatnonzero(known)
                    score[start + rows, slot] = np.einsum("ij,ij->i", x[rows], self.weights[col[rows]])
        return column, np.where(a < b, score, -score)


def tourney(referee: Referee, holders: np.ndarray) -> Outcome:
    """The array tourney of METHOD.md step 6 over each item's bracket, ``holders`` (n, T).

    Each round pairs slots (0, 1), (2, 3), ...; an odd last slot gets a bye
    and moves on as the last slot of the next round. T - 1 matches per item.
    """
    n = holders.shape[0]
    column = np.full(n, -1, dtype=np.int64)
    winner_score = np.full(n, np.nan)
    while holders.shape[1] > 1:
        paired = holders.shape[1] // 2 * 2
        first, second = holders[:, 0:paired:2], holders[:, 1:paired:2]
        cols, seen_from_first = referee.seen_from(first, second)
        first_wins = seen_from_first >= 0
        holders = np.concatenate([np.where(first_wins, first, second), holders[:, paired:]], axis=1)
        if holders.shape[1] == 1:
            column, winner_score = cols[:, 0], np.abs(seen_from_first[:, 0])
    return Outcome(np.ascontiguousarray(holders[:, 0]), column, winner_score)


def round_robin(referee: Referee, candidates: np.ndarray, base_scores: np.ndarray) -> Outcome:
    """Every pair of an item's candidates (n, c) plays once; most wins takes it, ties broken by base score.

    The deciding match reported is the winner's match against the runner-up
    (the next candidate by the same ordering): the closest thing to a final.
    """
    n, c = candidates.shape
    if c == 1:
        return Outcome(candidates[:, 0].copy(), np.full(n, -1, np.int64), np.full(n, np.nan))
    i, j = np.triu_indices(c, k=1)
    _, seen_from_first = referee.seen_from(candidates[:, i], candidates[:, j])
    first_wins = (seen_from_first >= 0).astype(np.float32)
    # wins of slot s = (matches s won as first) + (matches s played as second) - (matches its first won against it)
    signed_incidence = np.zeros((i.size, c), dtype=np.float32)
    signed_incidence[np.arange(i.size), i] = 1.0
    signed_incidence[np.arange(i.size), j] = -1.0
    wins = first_wins @ signed_incidence + np.bincount(j, minlength=c).astype(np.float32)
    # base scores are cosines in [-1, 1]: scaled into [0, 0.5] they only break ties between win counts
    base = np.take_along_axis(base_scores, candidates, axis=1).astype(np.float64)
    key = wins.astype(np.float64) + (base + 1.0) / 4.0
    rows = np.arange(n)
    best = np.argmax(key, axis=1)
    key[rows, best] = -np.inf
    runner_up = np.argmax(key, axis=1)
    winner, second = candidates[rows, best], candidates[rows, runner_up]
    column, seen_from_winner = referee.seen_from(winner[:, None], second[:, None])
    return Outcome(winner, column[:, 0], seen_from_winner[:, 0])
