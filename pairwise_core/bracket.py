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

from pairwise_core.pair_weights import DenseWeights, PairWeights


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
    """Every pair's score precomputed: pair p in column ``offset + p`` of ``scores`` (n, offset + P).

    The offset lets the block's one C-contiguous product serve as it is: a
    column slice of it is not contiguous, and its flat view was a copy of the
    whole n x P table in every round (at K = 330, 60% of a run's time).
    """

    scores: np.ndarray
    index: np.ndarray
    offset: int = 0

    def seen_from(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        column = self.index[a, b]
        n, width = self.scores.shape
        flat = column + (self.offset + np.arange(n) * width)[:, None]  # a flat take beats take_along_axis
        score = np.take(self.scores.reshape(-1), flat)
        return column, np.where(a < b, score, -score)


@dataclass(frozen=True)
class OnDemand:
    """Scores of just the matches played, from each pair's weights on its own dimensions.

    A fallback pair (every dimension kept) or a pair without weights (never
    met while fitting) is played on the full embedding: |x| (cos_lo - cos_hi),
    which is x . (u_lo - u_hi) for unit class rows.
    """

    x: np.ndarray  # (n, d) items
    weights: PairWeights | DenseWeights
    fallback: np.ndarray  # (P,) bool
    index: np.ndarray
    cosines: np.ndarray  # (n, K)
    norms: np.ndarray  # (n,)

    def seen_from(self, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        column = self.index[a, b]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        rows = np.arange(a.shape[0])[:, None]
        score = (self.cosines[rows, lo] - self.cosines[rows, hi]) * self.norms[:, None]
        masked = column >= 0
        masked[masked] = ~self.fallback[column[masked]]
        row, slot = np.nonzero(masked)
        score[row, slot] = self.weights.dots(self.x, row, column[row, slot])
        return column, np.where(a < b, score, -score)


def seeded_slots(n_teams: int, rng: np.random.Generator) -> np.ndarray:
    """A bracket of 2**ceil(log2 T) slots: the team index in each slot, -1 for a bye.

    Every bye falls in round 1, at most one per match, in matches drawn by
    ``rng``; the teams fill the other slots in order. So each team needs
    ceil(log2 T) wins, or one fewer after a bye, and over seeds no slot is
    favoured. (Carrying an odd team out to the end of every round gave the
    same team every bye: at K = 9 the last-seeded class had only the final
    to win, and took 4 to 10 points more items than the round robin gave it.)
    """
    size = 1 << max(n_teams - 1, 0).bit_length()
    slots = np.zeros(size, dtype=np.int64)
    if size > 1:
        byes = rng.choice(size // 2, size=size - n_teams, replace=False)
        slots[2 * byes + 1] = -1
    taken = slots >= 0
    slots[taken] = np.arange(n_teams)
    return slots


def tourney(referee: Referee, holders: np.ndarray, slots: np.ndarray) -> Outcome:
    """The array tourney of METHOD.md step 6 over each item's bracket, ``holders`` (n, T).

    ``slots`` (from ``seeded_slots``) places the T columns in a bracket padded
    to a power of two. Round 1 plays slots (0, 1), (2, 3), ... where neither
    is a bye; later rounds pair the survivors the same way. T - 1 matches per
    item. The deciding match is the final.
    """
    n = holders.shape[0]
    column = np.full(n, -1, dtype=np.int64)
    winner_score = np.full(n, np.nan)
    matches = slots.reshape(-1, 2) if holders.shape[1] > 1 else None
    while matches is not None:
        first, second = matches[:, 0], matches[:, 1]
        played = second >= 0
        a, b = holders[:, first[played]], holders[:, second[played]]
        cols, seen_from_a = referee.seen_from(a, b)
        survivors = holders[:, first]  # a team with a bye moves on without playing
        survivors[:, played] = np.where(seen_from_a >= 0, a, b)
        holders = survivors
        if holders.shape[1] == 1:
            column, winner_score = cols[:, 0], np.abs(seen_from_a[:, 0])
            matches = None
        else:
            matches = np.arange(holders.shape[1]).reshape(-1, 2)
    return Outcome(np.ascontiguousarray(holders[:, 0]), column, winner_score)


def round_robin(referee: Referee, candidates: np.ndarray, base_scores: np.ndarray) -> Outcome:
    """Every pair of an item's candidates (n, c) plays once; most wins takes it, ties broken by base score.

    The deciding match reported is the winner's win over the strongest
    opponent it beat, strength being the same order (wins, then base score):
    the runner-up when the winner beat it. In a cycle the winner may have lost
    to the runner-up, and a margin taken from that match would be negative
    (687 of 12,000 items once); a winner always has a win, so this match exists.
    """
    n, c = candidates.shape
    if c == 1:
        return Outcome(candidates[:, 0].copy(), np.full(n, -1, np.int64), np.full(n, np.nan))
    i, j = np.triu_indices(c, k=1)
    columns, seen_from_first = referee.seen_from(candidates[:, i], candidates[:, j])
    first_wins = seen_from_first >= 0
    # wins of slot s = (matches s won as first) + (matches s played as second) - (matches its first won against it)
    signed_incidence = np.zeros((i.size, c), dtype=np.float32)
    signed_incidence[np.arange(i.size), i] = 1.0
    signed_incidence[np.arange(i.size), j] = -1.0
    wins = first_wins.astype(np.float32) @ signed_incidence + np.bincount(j, minlength=c).astype(np.float32)
    # base scores are cosines in [-1, 1]: scaled into [0, 0.5] they only break ties between win counts
    base = np.take_along_axis(base_scores, candidates, axis=1).astype(np.float64)
    strength = wins.astype(np.float64) + (base + 1.0) / 4.0
    rows = np.arange(n)
    best = np.argmax(strength, axis=1)
    # per match: was it the winner's, and did the winner win it; then the strongest opponent so beaten
    as_first, as_second = i == best[:, None], j == best[:, None]
    beaten = np.where(as_first, j, i)
    won = (as_first & first_wins) | (as_second & ~first_wins)
    deciding = np.argmax(np.where(won, strength[rows[:, None], beaten], -np.inf), axis=1)
    seen_from_winner = np.where(as_first, seen_from_first, -seen_from_first)[rows, deciding]
    return Outcome(candidates[rows, best], columns[rows, deciding], seen_from_winner)
