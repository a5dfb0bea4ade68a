"""Research: can the label-aware review's discriminant resist the noise in the labels it learns from?

    cd bench && PYTHONPATH=.. ../.venv/bin/python research_robust.py data/real data/real-verbs [--seeds 0 1 2]
        [--kinds uniform confused class-conditional] [--variants ...] [--halves]

Same protocol as research_review.py (10% flipped, 5 folds, class sums over every item, scatter from a
20,000-row seeded sample; with --halves, each seeded half of the catalog alone, sample = the half). The
baseline is FoldDiscriminant as shipped (5 polish steps). Each variant fits a first round, the
shipped LDA (its shrinkage and temperature), scores the sample rows out of fold, and refits:

- weights w_i = p(given | x_i) (soft) or 1[p(given) >= 0.1] (drop): the scatter becomes
  sum_i w_i (x_i - m_y)(x_i - m_y)^T / (sum w - K) (a weighted x x^T over the sample), the class means
  the full (every item) means plus the control variate (weighted sample mean - sample mean);
- relabel: each row's class is soft, q_ik ~ p(k | x_i) * (b if k = y_i else 1): only the class sums
  move (sum_k q_ik = 1, so the sum of x x^T is unchanged), the means again by the control variate;

then re-chooses shrinkage and temperature and polishes, plainly or with the loss weighted the same way
(soft targets q for relabel). "nested": the weights of fold g's rows for fold f's model come from the LDA
of the folds other than f and g, so no label of fold f reaches fold f's model; otherwise from the model of
the folds other than g (it saw fold f's labels). Printed per catalog, noise and seed: AUC, p@k, fit time
(for a variant: the shipped fit's plus its own, single-threaded).

Result (not adopted): "nested drop0.01+wpolish" was the only variant within 0.005 of the shipped fit on
every nouns/verbs cell, seeds 0-2 (nouns class-conditional p@k 0.711 -> 0.749, confused 0.531 -> 0.585),
but it lost under uniform noise where it was confirmed: real-verbs-mpnet p@k 0.615 -> 0.605 (seeds 0-2),
held-out halves nouns A 0.814 -> 0.807, verbs A 0.560 -> 0.548; and it doubled the fit. Dropping at
0.1 or by confident learning (cl) gained more under confused noise (nouns p@k 0.65) and lost more
under uniform noise. A version inside FoldDiscriminant (pruned rows' sums subtracted from the Scatter,
class means moved by the sample's control variate, its polish on 8,000 kept rows rather than pruned
rows weighted 0) gave the same figures on real-verbs-mpnet and within 0.005 elsewhere (nouns p@k, seeds
0-2: uniform 0.809, confused 0.585, class-conditional 0.749).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pairwise_core.discriminant import (
    POLISH_PENALTY, POLISH_ROWS, SHRINKAGES, TEMPERATURES, ClassSums, FoldDiscriminant, Scatter, lbfgs,
)
from pairwise_core.refine import log_softmax
from research_refine import VIEWS, load
from research_review import N_FOLDS, NOISE, measures
from review_noise import flip_labels


class Stats:
    """Per fold, concatenated: full class counts (F, K) and sums (F, K, D); the sample's x x^T (F, D, D)."""

    def __init__(self, sums: list[ClassSums], scatter: Scatter):
        self.count = np.max([s.count for s in sums], axis=0)
        self.total = np.concatenate([s.total for s in sums], axis=2)
        self.outer = scatter.outer
        self.s_count, self.s_total = scatter.count, scatter.total


def gaussian(st: Stats, x, y, fold, folds, q=None, w=None, cv=True):
    """(means (K, D), log prior (K,), covariance (D, D)) from the folds in ``folds`` (bool mask (F,)).
    q: (n, K) soft class of each sample row (rows sum to its weight), w: (n,) weight of its x x^T."""
    rows = folds[fold]
    full_n, full_s = st.count[folds].sum(0), st.total[folds].sum(0)
    s0_n, s0_s = st.s_count[folds].sum(0), st.s_total[folds].sum(0)
    outer = st.outer[folds].sum(0)
    if q is None:
        qn, qs = s0_n, s0_s
    else:
        qn, qs = q[rows].sum(0), q[rows].T @ x[rows].astype(np.float64)
    if w is not None:
        low = rows & (w < 1)
        z = x[low]
        outer = outer - (z * (1 - w[low])[:, None].astype(z.dtype)).T.astype(np.float64) @ z
    seen = qn > 1e-9
    cov = (outer - (qs[seen].T / qn[seen]) @ qs[seen]) / max(qn.sum() - seen.sum(), 1.0)
    means = full_s / np.maximum(full_n, 1.0)[:, None]
    items = full_n.copy()
    if q is not None and cv:
        means = means + qs / np.maximum(qn, 1e-9)[:, None] - s0_s / np.maximum(s0_n, 1.0)[:, None]
        items = full_n * qn / np.maximum(s0_n, 1.0)
    elif q is not None:
        means = qs / np.maximum(qn, 1e-9)[:, None]
        items = qn
    log_prior = np.log(np.maximum(items, 0.5) / max(items.sum(), 1.0))
    return means, log_prior, cov


def solve(model, a):
    means, log_prior, cov = model
    d = cov.shape[0]
    shrunk = (1 - a) * cov + a * np.trace(cov) / d * np.eye(d)
    coef = np.linalg.solve(shrunk, means.T)
    return coef, -0.5 * np.einsum("kd,dk->k", means, coef) + log_prior


def choose(model0, x, y, fold):
    """As FoldDiscriminant._choose: grids on the first fold's rows under the model of the others."""
    rows = fold == fold.min()
    best = (-np.inf, None, None)
    for a in SHRINKAGES:
        coef, b = solve(model0, a)
        logits = x[rows] @ coef + b
        for t in TEMPERATURES:
            best = max(best, (float(log_softmax(logits / t)[np.arange(rows.sum()), y[rows]].sum()), a, t),
                       key=lambda v: v[0])
    return best[1], best[2]


def polish_targets(coef, intercept, x, target, steps, penalty=POLISH_PENALTY):
    """FoldDiscriminant's polish with a target matrix (n, K): one-hot labels, weighted, or soft."""
    n = len(target)
    start = np.vstack([coef, intercept[None]])
    scale = target.sum(1)

    def loss_grad(w):
        logits = (x @ w[:-1].astype(x.dtype)).astype(np.float64) + w[-1]
        log_p = log_softmax(logits)
        residual = (np.exp(log_p) * scale[:, None] - target) / n
        grad = np.vstack([(x.T @ residual.astype(x.dtype)).astype(np.float64), residual.sum(axis=0)[None]])
        grad += penalty * (w - start)
        return float(-(target * log_p).sum() / n + penalty / 2 * ((w - start) ** 2).sum()), grad

    w = lbfgs(loss_grad, start, steps)
    return w[:-1], w[-1]


def first_round(st, x, y, fold, a, t, nested):
    """Out-of-fold log posteriors of the sample rows: {f: (n, K)} where row i of fold g != f is scored by the
    model of folds not in {f, g} (nested), or one (n, K) for all f (row of fold g by the model of folds != g)."""
    n_f = st.count.shape[0]
    if not nested:
        out = np.zeros((len(y), st.count.shape[1]))
        for g in range(n_f):
            coef, b = solve(gaussian(st, x, y, fold, np.arange(n_f) != g), a)
            out[fold == g] = log_softmax((x[fold == g] @ coef + b) / t)
        return {f: out for f in range(n_f)}
    outs = {f: np.zeros((len(y), st.count.shape[1])) for f in range(n_f)}
    for f in range(n_f):
        for g in range(f + 1, n_f):
            mask = (np.arange(n_f) != f) & (np.arange(n_f) != g)
            coef, b = solve(gaussian(st, x, y, fold, mask), a)
            outs[f][fold == g] = log_softmax((x[fold == g] @ coef + b) / t)
            outs[g][fold == f] = log_softmax((x[fold == f] @ coef + b) / t)
    return outs


def targets(log_p, y, how, scored):
    """(q (n, K), w (n,) or None) from the first round's log posteriors."""
    n, k = log_p.shape
    p = np.exp(log_p)
    given = p[np.arange(n), y]
    onehot = np.zeros((n, k))
    onehot[np.arange(n), y] = 1
    kind, value = how
    if kind == "soft":
        w = given ** value
        return onehot * w[:, None], w
    if kind == "drop":
        w = (given >= value).astype(np.float64)
        return onehot * w[:, None], w
    if kind == "cl2":  # as cl, the thresholds from the rows this model's first round scored (cl: every row, those
        # of the model's own fold at p = 1: thresholds too high)
        thresholds = np.array([p[scored & (y == c), c].mean() if (scored & (y == c)).any() else 1.0
                               for c in range(k)])
        confident = np.where(p >= thresholds, p, -1.0)
        w = ~((confident.max(1) >= 0) & (confident.argmax(1) != y))
        w = w.astype(np.float64)
        return onehot * w[:, None], w
    if kind == "cl":  # confident learning: another class above its own mean self-confidence, and the likeliest such
        thresholds = np.array([p[y == c, c].mean() if (y == c).any() else 1.0 for c in range(k)])
        confident = np.where(p >= thresholds, p, -1.0)
        w = ~((confident.max(1) >= 0) & (confident.argmax(1) != y))
        w = w.astype(np.float64)
        return onehot * w[:, None], w
    if kind == "relabel":
        q = p * np.where(onehot > 0, value, 1.0)
        return q / q.sum(1, keepdims=True), None
    raise ValueError(kind)


def robust(sums, scatter, x, y, fold, base: FoldDiscriminant, how, nested, polish_how, steps=5, cv=True,
           refit=True, rechoose=True):
    """The refitted coefficients per fold: {f: (coef (D, K), intercept (K,))}. refit=False: the shipped
    LDA, only the polish weighted; rechoose=False: the first round's shrinkage and temperature."""
    st = Stats(sums, scatter)
    n_f = st.count.shape[0]
    first = first_round(st, x, y, fold, base.shrinkage, base.temperature, nested)
    fitted, qs = {}, {}
    for f in range(n_f):
        q, w = targets(first[f], y, how, fold != f)
        qs[f] = q
        if refit:
            fitted[f] = gaussian(st, x, y, fold, np.arange(n_f) != f, q, w, cv)
        else:
            fitted[f] = gaussian(st, x, y, fold, np.arange(n_f) != f)
    f0 = int(fold.min())
    a, t = choose(fitted[f0], x, y, fold) if refit and rechoose else (base.shrinkage, base.temperature)
    coefs = {}
    for f in range(n_f):
        coef, b = solve(fitted[f], a)
        coef, b = coef / t, b / t
        rows = np.flatnonzero(fold != f)
        rows = rows[np.linspace(0, rows.size - 1, min(rows.size, POLISH_ROWS)).astype(np.int64)]
        if polish_how == "plain":
            target = np.zeros((rows.size, len(b)))
            target[np.arange(rows.size), y[rows]] = 1
        else:
            target = qs[f][rows]
        if steps:
            coef, b = polish_targets(coef, b, x[rows], target, steps)
        coefs[f] = (coef.astype(np.float32), b)
    return coefs, (a, t)


def score(coefs, xall, fold):
    out = np.zeros((len(fold), len(coefs[0][1])))
    for f, (coef, b) in coefs.items():
        out[fold == f] = xall[fold == f] @ coef + b
    return log_softmax(out)


def V(how, nested=True, polish="weighted", **kw):
    return dict(how=how, nested=nested, polish_how=polish, **kw)


VARIANTS = {
    "soft": V(("soft", 1.0), False, "plain"),
    "soft+wpolish": V(("soft", 1.0), False),
    "drop0.1": V(("drop", 0.1), False, "plain"),
    "drop0.1+wpolish": V(("drop", 0.1), False),
    "relabel b=1": V(("relabel", 1.0), False, "plain"),
    "relabel b=1+qpolish": V(("relabel", 1.0), False),
    "relabel b=10+qpolish": V(("relabel", 10.0), False),
    "nested soft+wpolish": V(("soft", 1.0)),
    "nested drop0.1+wpolish": V(("drop", 0.1)),
    "nested relabel b=1+qpolish": V(("relabel", 1.0)),
    "wpolish only drop0.1": V(("drop", 0.1), refit=False),
    "wpolish only soft": V(("soft", 1.0), refit=False),
    "nested drop0.01+wpolish": V(("drop", 0.01)),
    "nested drop0.03+wpolish": V(("drop", 0.03)),
    "nested drop0.02+wpolish": V(("drop", 0.02)),
    "nested drop0.01+wpolish 10": V(("drop", 0.01), steps=10),
    "nested cl+wpolish": V(("cl", 0)),
    "nested cl+wpolish 10": V(("cl", 0), steps=10),
    "nested cl2+wpolish": V(("cl2", 0)),
    "nested drop0.2+wpolish": V(("drop", 0.2)),
    "nested drop0.3+wpolish": V(("drop", 0.3)),
    "nested drop0.1+wpolish keep a,t": V(("drop", 0.1), rechoose=False),
    "nested drop0.1+wpolish 10": V(("drop", 0.1), steps=10),
    "nested drop0.1+wpolish no cv": V(("drop", 0.1), cv=False),
    "nested drop0.1 plain": V(("drop", 0.1), polish="plain"),
}


def run(name, xs, gold, base_labels, k, kind, seed, sample_all, variants, out):
    rng = np.random.default_rng(seed)
    n = gold.size
    noisy = flip_labels(gold, base_labels, k, kind, NOISE, rng)
    flipped = noisy != gold
    fold = rng.integers(0, N_FOLDS, n)
    sums = [ClassSums.of(x, noisy, fold, N_FOLDS, k) for x in xs]
    sample = np.arange(n) if sample_all else np.sort(np.random.default_rng(seed).permutation(n)[:20_000])
    x = np.concatenate([x[sample] for x in xs], axis=1)
    xall = np.concatenate(xs, axis=1)
    y, sf = noisy[sample], fold[sample]
    t0 = time.perf_counter()
    scatter = Scatter.of(x, y, sf, N_FOLDS, k)
    t_scatter = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = FoldDiscriminant(sums, scatter, x, y, sf)
    t_base = time.perf_counter() - t0
    lp = base.log_posterior(xs, np.ones((n, len(xs)), bool), fold)
    auc, _, pk, _ = measures(-lp[np.arange(n), noisy], flipped)
    print(f"  {name} {kind} seed {seed}: scatter {t_scatter:.1f}s; shipped a={base.shrinkage} "
          f"t={base.temperature:.2f}", flush=True)
    print(f"    {'shipped':28s} AUC {auc:.3f}  p@k {pk:.3f}  fit {t_base:.1f}s", flush=True)
    out.append((name, kind, seed, "shipped", auc, pk, t_base))
    for v in variants:
        t0 = time.perf_counter()
        coefs, (a, t) = robust(sums, scatter, x, y, sf, base, **VARIANTS[v])
        t_v = time.perf_counter() - t0
        lp = score(coefs, xall, fold)
        auc, _, pk, _ = measures(-lp[np.arange(n), noisy], flipped)
        print(f"    {v:28s} AUC {auc:.3f}  p@k {pk:.3f}  fit +{t_v:.1f}s  (a={a}, t={t:.2f})", flush=True)
        out.append((name, kind, seed, v, auc, pk, t_base + t_v))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["uniform", "confused", "class-conditional"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    parser.add_argument("--halves", action="store_true")
    args = parser.parse_args()
    out = []
    for path in args.data:
        cat = load(path)
        xs = [cat.x[v].astype(np.float32) for v in VIEWS]
        if not args.halves:
            for kind in args.kinds:
                for seed in args.seeds:
                    run(cat.name, xs, cat.gold, cat.base, cat.k, kind, seed, False, args.variants, out)
            continue
        half = np.random.default_rng(0).random(cat.n) < 0.5
        for hname, rows in (("A", np.flatnonzero(half)), ("B", np.flatnonzero(~half))):
            for kind in args.kinds:
                for seed in args.seeds:
                    run(f"{cat.name}/{hname}", [x[rows] for x in xs], cat.gold[rows],
                        {v: cat.base[v][rows] for v in VIEWS}, cat.k, kind, seed, True, args.variants, out)
    print("\nmeans over seeds: catalog, noise, route: AUC / p@k (fit s)")
    keys = list(dict.fromkeys((c, k, v) for c, k, _, v, *_ in out))
    for key in keys:
        vals = np.array([r[4:] for r in out if r[:2] == key[:2] and r[3] == key[2]])
        print(f"  {key[0]:24s} {key[1]:18s} {key[2]:28s} {vals[:, 0].mean():.3f} / {vals[:, 1].mean():.3f}"
              f"  ({vals[:, 2].mean():.1f}s)")


if __name__ == "__main__":
    main()
