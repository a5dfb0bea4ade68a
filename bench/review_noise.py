"""Seeded label noise for measuring the label-error finder (METHOD.md step 9).

Uniform flips alone flatter a finder: real annotation errors go to a class that
looks like the true one, and pile up in a few classes. So three kinds:

- uniform: a flipped label goes to another class, uniformly;
- confused: to the class the base labels (cosine argmax against the class
  embeddings, per view) most often put the true class's items in, confusion
  summed over the views: the error a hurried annotator makes;
- class-conditional: three seeded classes carry 80% of the flips (capped at 60%
  of their items), the rest spread over the other classes; flips go to another
  class uniformly.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

KINDS = ("uniform", "confused", "class-conditional")


def flip_labels(truth: np.ndarray, base_labels_by_view: Mapping[str, np.ndarray], n_classes: int, kind: str,
                fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of ``truth`` (class indices) with round(fraction * n) seeded items flipped, by ``kind``.

    ``base_labels_by_view`` (class indices per item, per view, from the clean
    catalog) is read only for 'confused'.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind of noise {kind!r}; expected one of {', '.join(KINDS)}")
    noisy = truth.copy()
    n_flip = int(round(fraction * truth.size))
    if kind == "class-conditional":
        heavy = rng.choice(n_classes, 3, replace=False)
        in_heavy = np.isin(truth, heavy)
        n_heavy = min(int(0.8 * n_flip), int(0.6 * in_heavy.sum()))
        picked = np.concatenate([rng.choice(np.flatnonzero(in_heavy), n_heavy, replace=False),
                                 rng.choice(np.flatnonzero(~in_heavy), n_flip - n_heavy, replace=False)])
    else:
        picked = rng.choice(truth.size, n_flip, replace=False)
    if kind == "confused":
        confusion = np.zeros((n_classes, n_classes))
        for base in base_labels_by_view.values():
            np.add.at(confusion, (truth, base), 1)
        np.fill_diagonal(confusion, -1)
        noisy[picked] = confusion.argmax(axis=1)[truth[picked]]
    else:
        noisy[picked] = (truth[picked] + rng.integers(1, n_classes, picked.size)) % n_classes
    return noisy
