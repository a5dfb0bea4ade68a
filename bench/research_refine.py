"""Research: the refinement of METHOD.md step 8 and the calibration of its posterior.

    .venv/bin/python bench/research_refine.py --data bench/data/real bench/data/real-verbs \\
        bench/data/real-mpnet bench/data/real-verbs-mpnet [--grid] [--sample]

Everything is in memory and in numpy. Per catalog and view, the pairwise
classifier (``pairwise_core.PairwiseClassifier``, defaults) is fitted on the
whole catalog and gives the base and pairwise labels; then the refinement runs
exactly as METHOD.md step 8 writes it:

    anchor  y0 = (1 - eps) * onehot(pairwise label) + eps * softmax(tau * cosines)
    M-step  N_k = sum_i z_ik, S_k = sum_i z_ik x_i, Q_k = sum_i z_ik x_i^2,
            mu_k = S_k / |S_k|,
            var_d = sum_k (Q_kd - 2 mu_kd S_kd + N_k mu_kd^2) / sum_k N_k
    E-step  l_ik = x_i . (mu_k / var) - 1/2 sum_d mu_kd^2 / var_d,
            z_ik ~ y0_ik^lambda * exp(l_ik / T)

with x and the class embeddings L2-normalised and z = y0 at the start. The
temperature is relative: T = t0 * mean_d(1 / var_d) ("prec" scale) or
T = t0 * d ("dim" scale). The JOINT posterior sums lambda * log y0 + l / T
over the two views and takes the softmax.

Nothing here sees a label except the scoring. Hyperparameters are chosen on
the "tune" half (``np.random.default_rng(0).random(n) < 0.5``) of the MiniLM
catalogs and reported on the held-out half and on the other catalogs. The EM
itself runs on the whole catalog (it is transductive and label-free); only the
figures are split.

Calibration. ECE = sum over 10 equal-width bins of max-probability of
|bin| / n * |accuracy(bin) - mean confidence(bin)|. Label-free calibrations
tried (see ``label_free_*``) and a label-aware one (out-of-fold temperature
and histogram binning, folds by a hash of the row index).
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pairwise_core import PairwiseClassifier, agreement_f1, embeddings, f1_weighted

VIEWS = ("title", "gloss")


# ---------------------------------------------------------------- data


@dataclass
class Catalog:
    name: str
    gold: np.ndarray
    names: list[str]
    x: dict[str, np.ndarray]  # unit rows, float64
    c: dict[str, np.ndarray]  # unit rows, float64
    base: dict[str, np.ndarray] = field(default_factory=dict)
    pair: dict[str, np.ndarray] = field(default_factory=dict)
    cos: dict[str, np.ndarray] = field(default_factory=dict)
    tune: np.ndarray | None = None

    @property
    def n(self) -> int:
        return self.gold.size

    @property
    def k(self) -> int:
        return len(self.names)

    @property
    def d(self) -> int:
        return self.x[VIEWS[0]].shape[1]


def unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def load(path: Path) -> Catalog:
    items = pq.read_table(path / "items.parquet")
    classes = pq.read_table(path / "classes.parquet")
    names = classes.column("class_name").to_pylist()
    index = {name: k for k, name in enumerate(names)}
    gold = np.array([index[label] for label in items.column("label").to_pylist()])
    cat = Catalog(
        name=path.name,
        gold=gold,
        names=names,
        x={v: unit(embeddings(items, f"{v}_embedding")) for v in VIEWS},
        c={v: unit(embeddings(classes, f"{v}_embedding")) for v in VIEWS},
    )
    for v in VIEWS:
        raw = embeddings(items, f"{v}_embedding")
        result = PairwiseClassifier(embeddings(classes, f"{v}_embedding")).fit(raw).classify(raw)
        cat.base[v] = np.asarray(result.base_label)
        cat.pair[v] = np.asarray(result.label)
        cat.cos[v] = cat.x[v] @ cat.c[v].T
    cat.tune = np.random.default_rng(0).random(cat.n) < 0.5
    return cat


# ---------------------------------------------------------------- refinement


def log_softmax(s: np.ndarray) -> np.ndarray:
    s = s - s.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


def softmax(s: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(s))


@dataclass(frozen=True)
class Params:
    iters: int = 5
    t0: float = 0.01
    lam: float = 1.0
    eps: float = 0.1
    tau: float = 50.0
    scale: str = "dim"  # T = t0 * d ("dim"), t0 / mean(var) ("ivar") or t0 * mean(1/var) ("prec")
    anchor: str = "pair"  # anchor to the pairwise label ("pair") or to the base label ("base")


def anchor_log(cos: np.ndarray, labels: np.ndarray, p: Params) -> np.ndarray:
    y0 = p.eps * softmax(p.tau * cos)
    y0[np.arange(labels.size), labels] += 1.0 - p.eps
    return np.log(y0)


def m_step(x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Means (unit) and the shared diagonal variance from N, S, Q (all sums)."""
    n_k = z.sum(axis=0)
    s_k = z.T @ x
    q_k = z.T @ (x * x)
    mu = s_k / np.linalg.norm(s_k, axis=1, keepdims=True)
    var = (q_k - 2 * mu * s_k + n_k[:, None] * mu * mu).sum(axis=0) / n_k.sum()
    return mu, np.maximum(var, 1e-6 * var.mean())


def loglik(x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> np.ndarray:
    w = mu / var
    return x @ w.T - 0.5 * (mu * w).sum(axis=1)


def temperature(var: np.ndarray, d: int, p: Params) -> float:
    if p.scale == "prec":  # fails: a few near-constant dimensions dominate mean(1/var)
        return p.t0 * float(np.mean(1.0 / var))
    return p.t0 * (d if p.scale == "dim" else 1.0 / float(np.mean(var)))


@dataclass
class ViewFit:
    logits: np.ndarray  # lam * log y0 + l / T, (n, K)
    logits_per_iter: list[np.ndarray]  # the E-step's logits after each M-step (full data only)
    mu: np.ndarray
    var: np.ndarray
    T: float


def refine_view(
    x: np.ndarray, cos: np.ndarray, labels: np.ndarray, p: Params, sample: np.ndarray | None = None
) -> ViewFit:
    """EM of step 8. With ``sample`` (row indices), the inner iterations see only those rows and the
    last E-step runs on every row."""
    log_y0 = anchor_log(cos, labels, p)
    xs, ls = (x, log_y0) if sample is None else (x[sample], log_y0[sample])
    z = np.exp(ls)
    per_iter = []
    for it in range(p.iters):
        mu, var = m_step(xs, z)
        T = temperature(var, x.shape[1], p)
        if it < p.iters - 1:
            inner = p.lam * ls + loglik(xs, mu, var) / T
            z = softmax(inner)
            if sample is None:
                per_iter.append(inner)
    logits = p.lam * log_y0 + loglik(x, mu, var) / T
    per_iter.append(logits)
    return ViewFit(logits, per_iter, mu, var, T)


def refine(cat: Catalog, p: Params, sample: np.ndarray | None = None) -> dict[str, ViewFit]:
    source = cat.pair if p.anchor == "pair" else cat.base
    return {v: refine_view(cat.x[v], cat.cos[v], source[v], p, sample) for v in VIEWS}


def joint_logits(fits: dict[str, ViewFit]) -> np.ndarray:
    return sum(f.logits for f in fits.values())


# ---------------------------------------------------------------- metrics


def ece(conf: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() * abs(correct[m].mean() - conf[m].mean())
    return total / conf.size


def acc(gold: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(gold == pred))


def table_rows(cat: Catalog, fits: dict[str, ViewFit], rows: np.ndarray) -> list[str]:
    """base / pairwise / refined per view, and joint: acc, weighted F1, agreement, ECE."""
    g = cat.gold[rows]
    out = []
    lab = {
        "base": {v: cat.base[v][rows] for v in VIEWS},
        "pairwise": {v: cat.pair[v][rows] for v in VIEWS},
        "refined": {v: fits[v].logits[rows].argmax(1) for v in VIEWS},
    }
    for method, labels in lab.items():
        cells = []
        for v in VIEWS:
            cells += [acc(g, labels[v]), f1_weighted(g, labels[v])]
            if method == "refined":
                prob = softmax(fits[v].logits[rows])
                cells.append(ece(prob.max(1), prob.argmax(1) == g))
            else:
                cells.append(float("nan"))
        cells.append(agreement_f1(labels[VIEWS[0]], labels[VIEWS[1]]))
        out.append(f"| {method:<8} | " + " | ".join("  -  " if np.isnan(c) else f"{c:.3f}" for c in cells) + " |")
    pj = softmax(joint_logits(fits)[rows])
    yj = pj.argmax(1)
    out.append(
        f"| joint    | {acc(g, yj):.3f} | {f1_weighted(g, yj):.3f} | {ece(pj.max(1), yj == g):.3f} |"
        + " |".join([""] * 5)
    )
    return out


TABLE_HEAD = (
    "| method | title acc | title F1w | title ECE | gloss acc | gloss F1w | gloss ECE | agreement F1 |\n"
    "|---|---|---|---|---|---|---|---|"
)


# ---------------------------------------------------------------- calibration


S_GRID = np.exp(np.linspace(np.log(0.5), np.log(128.0), 49))  # temperatures tried


def scaled(logits: np.ndarray, s: float) -> np.ndarray:
    return softmax(logits / s)


def confidence(logits: np.ndarray, s: float, label: np.ndarray | None = None) -> np.ndarray:
    """Probability of ``label`` (default: the argmax, i.e. the max probability) at temperature s."""
    p = scaled(logits, s)
    label = p.argmax(1) if label is None else label
    return p[np.arange(label.size), label]


def oracle_s(logits: np.ndarray, gold: np.ndarray) -> float:
    """The ECE-minimising temperature (uses labels: a reference only)."""
    y = logits.argmax(1)
    return float(S_GRID[np.argmin([ece(confidence(logits, s), y == gold) for s in S_GRID])])


def noise_corrected_s(own: np.ndarray, other_label: np.ndarray, other_acc: float) -> float:
    """Label-free: the temperature under which this view's posterior best predicts the OTHER view's
    label, read as a noisy copy of the truth: P(other = k) = a p_k + (1 - a)(1 - p_k)/(K - 1)."""
    k = own.shape[1]
    rows = np.arange(other_label.size)
    best = (-np.inf, 1.0)
    for s in S_GRID:
        pk = scaled(own, s)[rows, other_label]
        ll = np.log(other_acc * pk + (1 - other_acc) * (1 - pk) / (k - 1) + 1e-300).sum()
        if ll > best[0]:
            best = (ll, float(s))
    return best[1]


def label_free_crossview(fits: dict[str, "ViewFit"], rounds: int = 4) -> dict[str, float]:
    """Each view's temperature fitted to predict the other's refined label, with the other's accuracy
    estimated by its own calibrated mean confidence; alternated to a fixed point."""
    a, b = VIEWS
    s = {a: 1.0, b: 1.0}
    lab = {v: fits[v].logits.argmax(1) for v in VIEWS}
    for _ in range(rounds):
        for v, w in ((a, b), (b, a)):
            acc_w = float(confidence(fits[w].logits, s[w]).mean())
            s[v] = noise_corrected_s(fits[v].logits, lab[w], acc_w)
    return s


def label_free_lda(cat: "Catalog", fits: dict[str, "ViewFit"]) -> float:
    """Label-free: the temperature that makes the joint discriminant's scale consistent with the
    spread the catalog shows (a two-class LDA check per class pair, full covariance, both views).

    Per view the l-part of the logit is linear, g_vk(x) = x . w_vk - b_vk with w_vk = mu_vk / (var_v T_v).
    Concatenating the views, u = w_k - w_j is the pair's direction; under soft class means m_k (from the
    joint posterior) and the pooled within-class covariance C of the concatenated vectors, the log-odds
    of k against j along u is alpha_kj * (u . x - const) with alpha_kj = u . (m_k - m_j) / u' C u,
    where the model says 1. The temperature is 1 / alpha, alpha averaged over pairs weighted by the
    posterior mass they share, sum_i p_ik p_ij. Sums needed: N_k, S_k (per view, under the joint
    posterior), X'X of the concatenated vectors, and the K x K co-membership sum_i p_i p_i'.
    """
    p = softmax(joint_logits(fits))
    x = np.concatenate([cat.x[v] for v in VIEWS], axis=1)
    w = np.concatenate([fits[v].mu / (fits[v].var * fits[v].T) for v in VIEWS], axis=1)  # (K, 2d)
    n_k = p.sum(0)
    s_k = p.T @ x
    m = s_k / n_k[:, None]
    cov = (x.T @ x - s_k.T @ m) / n_k.sum()
    wm = w @ m.T  # (K, K): w_k . m_j
    wcw = w @ cov @ w.T
    num = np.diag(wm)[:, None] - wm - (wm.T - np.diag(wm)[None, :])  # u.(m_k - m_j), u = w_k - w_j
    den = np.diag(wcw)[:, None] + np.diag(wcw)[None, :] - 2 * wcw
    co = p.T @ p
    mask = ~np.eye(cat.k, dtype=bool)
    alpha = float((co[mask] * num[mask] / den[mask]).sum() / co[mask].sum())
    return 1.0 / alpha


def fold_of(n: int, folds: int = 5) -> np.ndarray:
    """Folds by a hash of the row index (splitmix64 finaliser)."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(folds)).astype(int)


def nll_s(logits: np.ndarray, gold: np.ndarray) -> float:
    rows = np.arange(gold.size)
    return float(S_GRID[np.argmin([-log_softmax(logits / s)[rows, gold].sum() for s in S_GRID])])


def histogram_map(conf: np.ndarray, correct: np.ndarray, bins: int = 15) -> np.ndarray:
    """Accuracy per equal-mass bin of confidence: the bin edges and their accuracies."""
    edges = np.quantile(conf, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, bins - 1)
    accs = np.array([correct[idx == b].mean() if (idx == b).any() else np.nan for b in range(bins)])
    return edges, accs


def label_aware(logits: np.ndarray, gold: np.ndarray, folds: int = 5) -> dict[str, np.ndarray]:
    """Out-of-fold calibrated confidences of the argmax label: temperature (NLL) and binning on top
    of that temperature."""
    fold = fold_of(gold.size, folds)
    y = logits.argmax(1)
    out = {"oof temperature": np.empty(gold.size), "oof temp+binning": np.empty(gold.size)}
    for f in range(folds):
        fit, held = fold != f, fold == f
        s = nll_s(logits[fit], gold[fit])
        out["oof temperature"][held] = confidence(logits[held], s)
        edges, accs = histogram_map(confidence(logits[fit], s), y[fit] == gold[fit])
        c = confidence(logits[held], s)
        idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, len(accs) - 1)
        out["oof temp+binning"][held] = accs[idx]
    return out


# ---------------------------------------------------------------- grid search


def score(cats: list[Catalog], p: Params, rows: str = "tune") -> tuple[float, dict]:
    """Mean accuracy over catalogs of (title, gloss, joint) on the given half, per iteration too."""
    per = {}
    for cat in cats:
        fits = refine(cat, p)
        m = cat.tune if rows == "tune" else ~cat.tune
        g = cat.gold[m]
        per[cat.name] = [acc(g, fits[v].logits[m].argmax(1)) for v in VIEWS] + [
            acc(g, joint_logits(fits)[m].argmax(1))
        ]
    return float(np.mean([np.mean(v) for v in per.values()])), per


def grid(cats: list[Catalog]) -> Params:
    print("\n## Grid on the tune halves of", ", ".join(c.name for c in cats))
    print("mean accuracy over catalogs of (title, gloss, joint)\n")
    best = (-1.0, Params())
    results = []
    for scale, t0s in (("dim", (0.002, 0.005, 0.01, 0.02, 0.05)), ("ivar", (0.002, 0.005, 0.01, 0.02, 0.05))):
        for t0, lam, eps, tau in itertools.product(t0s, (0.5, 1.0, 2.0), (0.1, 0.3), (50.0,)):
            p = Params(iters=5, t0=t0, lam=lam, eps=eps, tau=tau, scale=scale)
            s, per = score(cats, p)
            results.append((s, p, per))
            if s > best[0]:
                best = (s, p)
    results.sort(key=lambda r: -r[0])
    for s, p, per in results[:15]:
        print(f"{s:.4f}  {p}  " + "  ".join(f"{k}: " + "/".join(f"{a:.3f}" for a in v) for k, v in per.items()))
    return best[1]


# ---------------------------------------------------------------- reports


def report_anchor_and_iters(cats: list[Catalog], p: Params) -> None:
    print("\n## Anchor to the pairwise label vs the base label; accuracy per EM iteration (held-out halves)\n")
    print("| catalog | anchor | title | gloss | joint |  joint acc after iteration 1, 2, ... |")
    print("|---|---|---|---|---|---|")
    for cat in cats:
        m = ~cat.tune
        g = cat.gold[m]
        for anchor in ("pair", "base"):
            long = refine(cat, Params(**{**p.__dict__, "anchor": anchor, "iters": 10}))
            per_iter = [
                acc(g, sum(long[v].logits_per_iter[i] for v in VIEWS)[m].argmax(1)) for i in range(10)
            ]
            fits = refine(cat, Params(**{**p.__dict__, "anchor": anchor}))
            cells = [acc(g, fits[v].logits[m].argmax(1)) for v in VIEWS] + [acc(g, joint_logits(fits)[m].argmax(1))]
            print(f"| {cat.name} | {anchor} | " + " | ".join(f"{c:.3f}" for c in cells) + " | "
                  + " ".join(f"{a:.3f}" for a in per_iter) + " |")


def report_calibration(cats: list[Catalog], all_fits: dict[str, dict[str, ViewFit]]) -> None:
    """ECE of the joint max-probability, held-out halves, raw and calibrated."""
    oracle = {}
    for cat in cats:
        L = joint_logits(all_fits[cat.name])
        oracle[cat.name] = oracle_s(L[cat.tune], cat.gold[cat.tune])
    minilm = [np.log(oracle[c.name]) for c in cats if not c.name.endswith("mpnet")]
    # without a MiniLM catalog in the run: the value measured on the two MiniLM tune halves (16.00, 20.16)
    s_fixed = float(np.exp(np.mean(minilm))) if minilm else 17.96
    print(f"\nfixed label-free temperature = geometric mean of the MiniLM tune-half oracles: {s_fixed:.2f}")
    print("\n## Calibration of the joint posterior (ECE, 10 bins; held-out half unless said)\n")
    print("| catalog | joint acc | raw ECE | oracle s (tune) | ECE at it | fixed s | ECE | cross-view s_t, s_g | "
          "ECE L/(s_t+s_g) | ECE mean-pool | ECE product | LDA s | ECE | OOF temp ECE | OOF temp+bins ECE |")
    print("|" + "---|" * 16)
    for cat in cats:
        fits = all_fits[cat.name]
        L = joint_logits(fits)
        y = L.argmax(1)
        m = ~cat.tune
        g = cat.gold
        raw = ece(confidence(L[m], 1.0), y[m] == g[m])
        s_or = oracle[cat.name]
        e_or = ece(confidence(L[m], s_or), y[m] == g[m])
        s_fx = s_fixed
        e_fx = ece(confidence(L[m], s_fx), y[m] == g[m])
        sv = label_free_crossview(fits)
        # joint from the calibrated views: (a) sum of the views' temperatures, (b) product of experts
        s_j = sv[VIEWS[0]] + sv[VIEWS[1]]
        e_cj = ece(confidence(L[m], s_j), y[m] == g[m])
        prod = sum(fits[v].logits / sv[v] for v in VIEWS)
        e_pr = ece(confidence(prod[m], 1.0, y[m]), y[m] == g[m])
        e_mp = ece(confidence(prod[m], 2.0, y[m]), y[m] == g[m])  # log-linear pool with weights 1/2
        s_lda = label_free_lda(cat, fits)
        e_lda = ece(confidence(L[m], s_lda), y[m] == g[m])
        aware = label_aware(L, g)
        e_aw = [ece(c[m], y[m] == g[m]) for c in aware.values()]
        print(f"| {cat.name} | {acc(g[m], y[m]):.3f} | {raw:.3f} | {s_or:.2f} | {e_or:.3f} | {s_fx:.2f} | {e_fx:.3f} | "
              f"{sv[VIEWS[0]]:.2f}, {sv[VIEWS[1]]:.2f} | {e_cj:.3f} | {e_mp:.3f} | {e_pr:.3f} | {s_lda:.2f} | {e_lda:.3f} | "
              f"{e_aw[0]:.3f} | {e_aw[1]:.3f} |")


def report_sample(
    cats: list[Catalog], p: Params, all_fits: dict[str, dict[str, ViewFit]], sizes: tuple[int, ...] = (2000, 5000, 10000)
) -> None:
    print("\n## Inner EM iterations on a seeded sample, last E-step on every item (joint label)\n")
    print("| catalog | sample | agreement with full-data EM | joint acc (held-out) | full-data joint acc |")
    print("|---|---|---|---|---|")
    for cat in cats:
        full = joint_logits(all_fits[cat.name]).argmax(1)
        m = ~cat.tune
        for size in sizes:
            if size >= cat.n:
                continue
            sample = np.sort(np.random.default_rng(0).choice(cat.n, size=size, replace=False))
            lab = joint_logits(refine(cat, p, sample)).argmax(1)
            print(f"| {cat.name} | {size} | {np.mean(lab == full):.4f} | {acc(cat.gold[m], lab[m]):.3f} | "
                  f"{acc(cat.gold[m], full[m]):.3f} |")


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, nargs="+", default=[Path("bench/data/real")])
    parser.add_argument("--grid", action="store_true", help="grid search on the tune halves of the MiniLM catalogs")
    parser.add_argument("--sample", action="store_true", help="inner EM iterations on a seeded sample")
    args = parser.parse_args()
    cats = []
    for path in args.data:
        start = time.perf_counter()
        cat = load(path)
        cats.append(cat)
        print(f"{cat.name}: {cat.n} items, {cat.k} classes, {cat.d}-d; pairwise fitted in "
              f"{time.perf_counter() - start:.1f}s")
    p = Params()
    if args.grid:
        p = grid([c for c in cats if not c.name.endswith("mpnet")])
    all_fits = {}
    for cat in cats:
        fits = all_fits[cat.name] = refine(cat, p)
        for half, rows in (("tune", cat.tune), ("held-out", ~cat.tune)):
            print(f"\n### {cat.name} ({half}, {rows.sum()} items), {p}\n")
            print(TABLE_HEAD)
            print("\n".join(table_rows(cat, fits, rows)))
    report_anchor_and_iters(cats, p)
    report_calibration(cats, all_fits)
    if args.sample:
        report_sample(cats, p, all_fits)


if __name__ == "__main__":
    main()
