"""The label-aware review's polish on held-out halves: does it hold on each half of each dev catalog?

    cd bench && ../.venv/bin/python review_halves.py data/real-verbs data/real

Each catalog is split into two seeded halves (seed 0); on each half alone, 10% of the labels are flipped
uniformly (seed 0) and the out-of-fold discriminant is fitted with 0, 5 and 10 polish steps. Printed:
ROC-AUC and precision@k (k = flips) at finding the flips.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pairwise_core.discriminant import ClassSums, FoldDiscriminant, Scatter
from research_refine import VIEWS, load
from research_review import N_FOLDS, NOISE, measures
from review_noise import flip_labels


def main() -> None:
    for path in sys.argv[1:]:
        cat = load(Path(path))
        half = np.random.default_rng(0).random(cat.n) < 0.5
        for name, rows in (("A", np.flatnonzero(half)), ("B", np.flatnonzero(~half))):
            rng = np.random.default_rng(0)
            gold = cat.gold[rows]
            noisy = flip_labels(gold, {v: cat.base[v][rows] for v in VIEWS}, cat.k, "uniform", NOISE, rng)
            fold = rng.integers(0, N_FOLDS, rows.size)
            xs = [cat.x[v][rows].astype(np.float32) for v in VIEWS]
            sums = [ClassSums.of(x, noisy, fold, N_FOLDS, cat.k) for x in xs]
            x = np.concatenate(xs, axis=1)
            scatter = Scatter.of(x, noisy, fold, N_FOLDS, cat.k)
            shown = []
            for steps in (0, 5, 10):
                model = FoldDiscriminant(sums, scatter, x, noisy, fold, polish_steps=steps)
                log_p = model.log_posterior(xs, np.ones((rows.size, len(VIEWS)), bool), fold)
                auc, _, pk, _ = measures(-log_p[np.arange(rows.size), noisy], noisy != gold)
                shown.append(f"{steps} steps AUC {auc:.3f} p@k {pk:.3f}")
            print(f"{cat.name} half {name} ({rows.size} items): " + "; ".join(shown), flush=True)


if __name__ == "__main__":
    main()
