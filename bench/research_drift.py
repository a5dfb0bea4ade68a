"""Which sample size and preprocessing the domain classifier of pairwise_core/drift.py needs (issue 21).

    PYTHONPATH=.:bench .venv/bin/python bench/research_drift.py bench/data/real bench/data/real-verbs [--seeds 0 1 2]

On the first catalog, per view and seed: the reference is a seeded half; the current sample is the other
half ("same"), the other half without a seeded quarter of the classes ("1/4 classes out"), or the other
half with 5% of its rows swapped for the second catalog's ("5% other"). Per variant (rows a side x
classifier) the table gives the mean out-of-fold ROC-AUC of each case and the mean seconds per test.
Every variant scales rows to unit length, then standardises; "C=..." is the logistic regression's
inverse L2 penalty (scikit-learn's default is 1), "pca64" a seeded randomized PCA to 64 dimensions
before the standardisation.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from evaluate_drift import load
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

CASES = ("same", "1/4 classes out", "5% other")


def model(variant: str, seed: int):
    """A variant "C=0.001" or "pca64,C=0.001"."""
    steps = variant.split(",")
    logistic = LogisticRegression(C=float(steps[-1].removeprefix("C=")), max_iter=1_000, random_state=seed)
    if steps[0] == "pca64":
        return make_pipeline(PCA(64, svd_solver="randomized", random_state=seed), StandardScaler(), logistic)
    return make_pipeline(StandardScaler(), logistic)


def auc(reference: np.ndarray, current: np.ndarray, variant: str, seed: int) -> float:
    x = np.concatenate([reference, current])
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    side = np.r_[np.zeros(len(reference)), np.ones(len(current))]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    score = cross_val_predict(model(variant, seed), x, side, cv=folds, method="decision_function")
    return float(roc_auc_score(side, score))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs=2, type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--rows", nargs="+", type=int, default=[5000])
    parser.add_argument("--variants", nargs="+", default=["C=1", "C=0.01", "C=0.001", "C=0.0001", "pca64,C=0.001"])
    args = parser.parse_args()
    catalog, other = (load(folder) for folder in args.data)
    print("| view | rows a side | preprocessing | " + " | ".join(f"AUC {c}" for c in CASES) + " | s per test |")
    print("|---|---|---|" + "---|" * (len(CASES) + 1))
    for view in catalog.views:
        for rows in args.rows:
            for variant in args.variants:
                values: dict[str, list[float]] = {c: [] for c in CASES}
                seconds = []
                for seed in args.seeds:
                    rng = np.random.default_rng(seed)
                    order = rng.permutation(len(catalog.labels))
                    reference = catalog.views[view][order[:rows]]
                    pool = order[len(order) // 2 :]
                    out = rng.choice(catalog.n_classes, catalog.n_classes // 4, replace=False)
                    for case in CASES:
                        if case == "1/4 classes out":
                            current = catalog.views[view][pool[~np.isin(catalog.labels[pool], out)][:rows]]
                        else:
                            current = catalog.views[view][pool[:rows]].copy()
                        if case == "5% other":
                            swapped = round(rows * 0.05)
                            current[:swapped] = other.views[view][rng.choice(len(other.labels), swapped, replace=False)]
                        start = time.perf_counter()
                        values[case].append(auc(reference, current, variant, seed))
                        seconds.append(time.perf_counter() - start)
                print(f"| {view} | {rows} | {variant} | " + " | ".join(f"{np.mean(values[c]):.3f}" for c in CASES)
                      + f" | {np.mean(seconds):.2f} |")


if __name__ == "__main__":
    main()
