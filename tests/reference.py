"""Plain per-item references for the vectorised bracket: METHOD.md steps 5 and 6, item by item."""

from collections.abc import Callable

import numpy as np


def masked_cosine(x: np.ndarray, c: np.ndarray, mask: np.ndarray) -> float:
    xm, cm = x * mask, c * mask
    nx, nc = np.linalg.norm(xm), np.linalg.norm(cm)
    return 0.0 if nx == 0 or nc == 0 else float(xm @ cm / (nx * nc))


def wins(x: np.ndarray, a: int, b: int, unit: np.ndarray, mask: np.ndarray) -> bool:
    """One match as METHOD.md words it; ties go to a (the first named)."""
    return masked_cosine(x, unit[a], mask) >= masked_cosine(x, unit[b], mask)


def play_bracket(x: np.ndarray, teams: list[int], unit: np.ndarray, mask_of: Callable[[int, int], np.ndarray]) -> int:
    """Pair slots (0, 1), (2, 3), ...; an odd last team gets a bye; until one is left."""
    while len(teams) > 1:
        nxt = [teams[j] if wins(x, teams[j], teams[j + 1], unit, mask_of(teams[j], teams[j + 1])) else teams[j + 1]
               for j in range(0, len(teams) - 1, 2)]
        if len(teams) % 2:
            nxt.append(teams[-1])
        teams = nxt
    return teams[0]


def unit_rows(classes: np.ndarray) -> np.ndarray:
    return classes / np.linalg.norm(classes, axis=1, keepdims=True)


def noisy_catalog(rng: np.random.Generator, k: int, d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """k random class embeddings and n items, each a class plus unit Gaussian noise: (x, classes)."""
    classes = rng.standard_normal((k, d))
    return classes[rng.integers(0, k, n)] + rng.standard_normal((n, d)), classes
