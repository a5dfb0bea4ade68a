"""Research for the label-error finder (METHOD.md step 9), in memory: which evidence ranks flipped labels best.

    .venv/bin/python bench/research_review.py bench/data/real bench/data/real-verbs [--seeds 0 1 2]

Needs the `supervised` extra (the peer). For each catalog, seed and kind of
noise (uniform flips; flips to the class the base labels confuse most with
the true one; class-conditional, where three classes carry 80% of the
flips), 10% of labels are flipped, then each route's score is ranked:

- zero-shot: 1 - p(given) under the refined joint posterior with the
  label-free weights (the labels are never read);
- label-aware: the out-of-fold shrunk discriminant (pairwise_core.discriminant)
  on the noisy labels, class sums over every item, scatter from a 20,000-row sample,
  alone and polished by a few L-BFGS steps of the logistic loss (an earlier
  version of this script also varied the penalty: 1e-2 lost to 1e-3 on both
  catalogs, e.g. nouns precision@k 0.795 against 0.807);
- combinations of the two; the peer: 5-fold LogisticRegression (C = 1).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from pairwise_core.discriminant import ClassSums, FoldDiscriminant, Scatter
from pairwise_core.joint import cross_view_weights, fit_weights, joint_log_posterior
from research_refine import VIEWS, Catalog, Params, load, refine
from review_noise import flip_labels

N_FOLDS = 5
NOISE = 0.10


def zero_shot(cat: Catalog, seed: int) -> np.ndarray:
    """(n, K) log joint posterior, label-free weights fitted on 5,000 seeded rows."""
    fits = refine(cat, Params(scale="ivar"))
    terms = np.stack([fits[v].logits for v in VIEWS], axis=1).astype(np.float32)
    present = np.ones(terms.shape[:2], bool)
    rows = np.random.default_rng(seed).permutation(cat.n)[:5000]
    _, joint = cross_view_weights(terms[rows], present[rows])
    return joint_log_posterior(terms, present, joint)


def label_aware(cat: Catalog, noisy: np.ndarray, fold: np.ndarray, seed: int) -> np.ndarray:
    xs = [cat.x[v].astype(np.float32) for v in VIEWS]
    sums = [ClassSums.of(x, noisy, fold, N_FOLDS, cat.k) for x in xs]
    sample = np.sort(np.random.default_rng(seed).permutation(cat.n)[:20_000])
    x = np.concatenate([x[sample] for x in xs], axis=1)
    scatter = Scatter.of(x, noisy[sample], fold[sample], N_FOLDS, cat.k)
    present = np.ones((cat.n, len(VIEWS)), bool)
    fitted = {steps: FoldDiscriminant(sums, scatter, x, noisy[sample], fold[sample], polish_steps=steps)
              for steps in (0, 5, 10)}
    print(f"    lda shrinkage {fitted[0].shrinkage}, temperature {fitted[0].temperature:.3f}")
    return fitted[0].log_posterior(xs, present, fold), {
        f"polished, {steps} steps": fitted[steps].log_posterior(xs, present, fold) for steps in (5, 10)}


def peer(cat: Catalog, noisy: np.ndarray, seed: int) -> np.ndarray:
    x = np.concatenate([cat.x[v] for v in VIEWS], axis=1)
    out = np.zeros((cat.n, cat.k))
    for train, test in StratifiedKFold(N_FOLDS, shuffle=True, random_state=seed).split(x, noisy):
        model = LogisticRegression(C=1.0, max_iter=1000).fit(x[train], noisy[train])
        out[np.ix_(test, model.classes_)] = model.predict_log_proba(x[test])
    return out


def measures(score: np.ndarray, flipped: np.ndarray) -> tuple[float, float, float, float]:
    """ROC-AUC, AP, precision@k (k = flips), recall@2k; higher score = more likely flipped."""
    k = int(flipped.sum())
    order = np.argsort(-score, kind="stable")
    return (roc_auc_score(flipped, score), average_precision_score(flipped, score),
            flipped[order[:k]].mean(), flipped[order[: 2 * k]].sum() / k)


def logit(log_p: np.ndarray) -> np.ndarray:
    return log_p - np.log1p(-np.minimum(np.exp(log_p), 1 - 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["uniform", "confused", "class-conditional"])
    args = parser.parse_args()
    for path in args.data:
        cat = load(path)
        zs = zero_shot(cat, 0)
        print(f"{cat.name}: zero-shot joint accuracy {np.mean(zs.argmax(1) == cat.gold):.3f}")
        for kind in args.kinds:
            for seed in args.seeds:
                rng = np.random.default_rng(seed)
                noisy = flip_labels(cat.gold, cat.base, cat.k, kind, NOISE, rng)
                flipped = noisy != cat.gold
                fold = rng.integers(0, N_FOLDS, cat.n)
                rows = np.arange(cat.n)
                t0 = time.perf_counter()
                la, polished = label_aware(cat, noisy, fold, seed)
                t_la = time.perf_counter() - t0
                t0 = time.perf_counter()
                lr = peer(cat, noisy, seed)
                t_lr = time.perf_counter() - t0
                p_zs, p_la = zs[rows, noisy], la[rows, noisy]
                poe = la + zs
                poe = poe - np.logaddexp.reduce(poe, axis=1, keepdims=True)
                sample = np.random.default_rng(seed).permutation(cat.n)[:20_000]
                terms = np.stack([la, zs], axis=1)
                weights = fit_weights(terms[sample], np.ones((sample.size, 2), bool), noisy[sample])
                stacked = joint_log_posterior(terms, np.ones((cat.n, 2), bool), weights)
                print(f"    stacked weights {np.round(weights, 3)}")
                routes = {
                    "zero-shot": -p_zs,
                    f"label-aware ({t_la:.1f}s)": -p_la,
                    "logit sum": -(logit(p_zs) + logit(p_la)),
                    "product of experts": -poe[rows, noisy],
                    "stacked": -stacked[rows, noisy],
                    f"peer LR ({t_lr:.1f}s)": -lr[rows, noisy],
                } | {name: -p[rows, noisy] for name, p in polished.items()}
                print(f"  {kind}, seed {seed}: {flipped.sum()} flips")
                for name, score in routes.items():
                    auc, ap, pk, r2k = measures(score, flipped)
                    share = np.mean(score > np.log(2))  # p_given < 0.5
                    print(f"    {name:28s} AUC {auc:.3f}  AP {ap:.3f}  p@k {pk:.3f}  r@2k {r2k:.3f}"
                          f"  p<0.5: {share:.3f}")


if __name__ == "__main__":
    main()
