"""Plain per-item references for the vectorised bracket: METHOD.md steps 5 and 6, item by item."""

from collections.abc import Callable

import numpy as np

MaskOf = Callable[[int, int], np.ndarray]


def masked_cosine(x: np.ndarray, c: np.ndarray, mask: np.ndarray) -> float:
    xm, cm = x * mask, c * mask
    nx, nc = np.linalg.norm(xm), np.linalg.norm(cm)
    return 0.0 if nx == 0 or nc == 0 else float(xm @ cm / (nx * nc))


def wins(x: np.ndarray, a: int, b: int, unit: np.ndarray, mask: np.ndarray) -> bool:
    """One match as METHOD.md words it; ties go to a (the first named)."""
    return masked_cosine(x, unit[a], mask) >= masked_cosine(x, unit[b], mask)


def match_margin(x: np.ndarray, winner: int, loser: int, unit: np.ndarray, mask: np.ndarray) -> float:
    """A match's confidence (x . w) / |x * m|: the winner's masked cosine minus the loser's."""
    return masked_cosine(x, unit[winner], mask) - masked_cosine(x, unit[loser], mask)


def play_bracket(
    x: np.ndarray, teams: list[int], unit: np.ndarray, mask_of: MaskOf, slots: np.ndarray
) -> tuple[int, float]:
    """The label and the final's margin. Round 1 pairs slots (0, 1), (2, 3), ... of the padded
    bracket, a team facing a bye (-1) moving on; then the survivors pair up until one is left."""
    if len(teams) == 1:
        return teams[0], float("nan")
    placed = [teams[s] if s >= 0 else None for s in slots]
    while len(placed) > 1:
        survivors = []
        for a, b in zip(placed[0::2], placed[1::2], strict=True):
            if b is None:
                survivors.append(a)
                continue
            won = wins(x, a, b, unit, mask_of(a, b))
            survivors.append(a if won else b)
            final = (a, b) if won else (b, a)
        placed = survivors
    return placed[0], match_margin(x, *final, unit, mask_of(*final))


def unit_rows(classes: np.ndarray) -> np.ndarray:
    return classes / np.linalg.norm(classes, axis=1, keepdims=True)


def noisy_catalog(rng: np.random.Generator, k: int, d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """k random class embeddings and n items, each a class plus unit Gaussian noise: (x, classes)."""
    classes = rng.standard_normal((k, d))
    return classes[rng.integers(0, k, n)] + rng.standard_normal((n, d)), classes
