"""Research: a TransCLIP-style transductive objective against today's graph step (issue: refined + graph).

    cd /work/wt-h50
    export PYTHONPATH=$PWD DO_NOT_TRACK=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
    export GRAPH_CACHE=/tmp/h50_cache
    PY=/work/main/.venv/bin/python
    $PY bench/research_transductive.py grid   bench/data/real bench/data/real-verbs          # tune halves
    $PY bench/research_transductive.py report bench/data/real bench/data/real-verbs \\
        bench/data/real-mpnet bench/data/real-verbs-mpnet                                    # held-out halves

Inputs are research_graph.py's (imported, not copied): per catalog and view the product's label-free refined
posterior P_v = softmax(own_v s_v) and joint P_j = softmax(sum_v joint_v s_v) (``MixtureRefiner`` and
``cross_view_weights`` defaults, fitted on the whole catalog), the pairwise labels, the unit views, gold
labels for scoring only, the tune half ``np.random.default_rng(0).random(n) < 0.5``, and the supervised
ceiling (5-fold logistic regression on every gold label).

Methods (all label-free, one thread):

- ``graph``: today's product step, with the product's own code: the points = ``GraphProjection`` (unit views
  concatenated / sqrt(2), PCA 128, unit), k = 20 neighbours by ``tasks.graph.neighbours`` (faiss IVF, 2 sqrt(n)
  lists, nprobe 8, seed 0), A_ij = max(cos, 0), W = A + A^T, F <- 0.2 P + 0.8 D^-1 W F ten times
  (``pairwise_core.graph.propagate``), then the label-free sharpening F^sqrt(2).
- ``transclip``: TransCLIP's zero-shot objective (Zanella et al., NeurIPS 2024; MaxZanella/transduction-for-vlms,
  TransCLIP_solver/TransCLIP_utils.py) on PCA-reduced unit features X (per view: PCA r of the unit view, unit;
  joint "concat": the graph's points). A Gaussian mixture with unit class means mu_k and one shared diagonal
  variance; block-majorisation in z:

      z_i  <-  softmax( lam * log prior_i  +  s * mean(var) * l_i  +  eta * sum_j Wn_ij z_j )      (inner, 5x)
      l_ik = x_i . (mu_k / var) - 1/2 sum_d mu_kd^2 / var_d        (= -1/2 |x_i - mu_k|^2_var + const_i)
      mu_k = unit(sum_i z_ik x_i),  var_d = sum_ik z_ik (x_id - mu_kd)^2 / n  (floored at 1% of its mean)
      Wn = (A + A^T) / (2k),  A_ij = max(cos_ij, 0) over the same kNN graph as ``graph`` (TransCLIP: cos, k=3,
      (W + W^T) / (2k) after its 1/50 scaling)

  from z = prior, ``outer`` M-steps. ``prior``: the refined posterior (P_v; P_j for the joint), or the
  pairwise anchor y0 (the refiner's own: then the mixture replaces the refiner). s scales the likelihood
  as the product's refiner does (its default T = 0.01 / mean(var) is s = 100; TransCLIP's 1/50 at d = 512 is
  about s = 10). Joint: "concat" (one mixture over the graph points, prior P_j) or "product" (one z shared by
  the views' mixtures: the sum of the views' likelihood terms, prior P_j).
- ``alt`` (the cheaper variant): rounds of the product's propagation and one mixture E-step:
  F = propagate(z); means and variance from F (M-step on X); z = softmax(lam log prior + s mean(var) l); the
  label is argmax of the last F (the graph step's output, sharpened by sqrt(2) as the product does).

Calibration (label-free): the raw z, and the product's rule (``cross_view_weights`` on log z_v, research_graph's
``recalibrate``). ECE: 10 equal-width bins of the max probability.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import research_graph as rg  # noqa: E402  (the inputs, metrics and ceiling of the earlier graph research)

from pairwise_core.graph import (GraphProjection, adjacency, edge_weights, propagate,  # noqa: E402
                                 sharpen, transition, undirected)
from pairwise_core.refine import _VAR_FLOOR, log_anchor  # noqa: E402

VIEWS = rg.VIEWS
OUTS = (*VIEWS, "joint")
K_GRAPH = 20  # the product's --graph-k
ALPHA, ITERATIONS, SHARPEN = 0.8, 10, math.sqrt(2)  # tasks/graph.py
CACHE = rg.CACHE


# ---------------------------------------------------------------- inputs


def projection(units: dict[str, np.ndarray], dims: int) -> np.ndarray:
    """The product's graph points (``GraphProjection``) of these unit views: PCA ``dims``, unit rows."""
    n = next(iter(units.values())).shape[0]
    present = np.ones((n, len(units)), bool)
    proj = GraphProjection.fit(units, present, dims)
    inv = np.ones(n, np.float32)
    return proj.project(n, {m: (u, inv, np.ones(n, bool)) for m, u in units.items()}).astype(np.float32)


class Inputs:
    """Per catalog: the research_graph Catalog, the graph points, the product's kNN graph, PCA'd views."""

    def __init__(self, cat: rg.Catalog, dims: int = 128):
        from tasks.graph import neighbours

        self.cat = cat
        t = time.perf_counter()
        self.points = projection({v: cat.x[v] for v in VIEWS}, 128)
        t1 = time.perf_counter()
        f = CACHE / f"{cat.name}-ivf-{K_GRAPH}.npz"
        if f.exists():
            z = np.load(f)
            self.ids, self.cos = z["ids"], z["cos"]
            self.graph_s = float(z["seconds"])
        else:
            self.ids, self.cos, _, _ = neighbours(self.points, K_GRAPH, 0)
            self.graph_s = time.perf_counter() - t1
            np.savez(f, ids=self.ids, cos=self.cos, seconds=self.graph_s)
        self.projection_s = t1 - t
        self.feats: dict[tuple[str, int], np.ndarray] = {("concat", 128): self.points}
        self.dims = dims
        self.log_prior = {"refined": {v: np.log(np.maximum(cat.post(i), 1e-30)) for i, v in enumerate(VIEWS)}}
        self.log_prior["refined"]["joint"] = np.log(np.maximum(cat.joint(), 1e-30))
        anchor = {v: log_anchor((cat.x[v] @ rg.unit(cat.c_raw[v]).T).astype(np.float64), cat.pair[v], eps=0.1,
                                tau=50.0) for v in VIEWS}
        anchor["joint"] = sum(anchor[v] for v in VIEWS)
        self.log_prior["anchor"] = anchor

    def x(self, view: str, dims: int) -> np.ndarray:
        if (view, dims) not in self.feats:
            self.feats[(view, dims)] = projection({view: self.cat.x[view]}, dims)
        return self.feats[(view, dims)]

    def step(self, k: int = K_GRAPH):
        """The product's D^-1 W over the first k neighbours."""
        a = adjacency(self.ids[:, :k], edge_weights(self.cos[:, :k], 1.0), self.cat.n)
        return transition(undirected(a), symmetric=False)

    def laplacian(self, k: int):
        """TransCLIP's neighbour matrix (A + A^T) / (2k), A_ij = max(cos, 0), float32."""
        a = adjacency(self.ids[:, :k], edge_weights(self.cos[:, :k], 1.0), self.cat.n)
        return (undirected(a) / (2.0 * k)).astype(np.float32).tocsr()


# ---------------------------------------------------------------- methods


def softmax32(s: np.ndarray) -> np.ndarray:
    s = s - s.max(1, keepdims=True)
    np.exp(s, out=s)
    s /= s.sum(1, keepdims=True)
    return s


def graph_step(inp: Inputs, prior: np.ndarray, k: int = K_GRAPH) -> np.ndarray:
    """Today's product graph step (label-free): propagate, then sharpen by sqrt(2)."""
    f = propagate(prior, inp.step(k), alpha=ALPHA, iterations=ITERATIONS)
    return sharpen(f, SHARPEN)


class Mixture:
    """TransCLIP's Gaussian part: unit class means, one shared diagonal variance, from memberships z."""

    def __init__(self, x: np.ndarray):
        self.x = x
        self.sq = np.einsum("ij,ij->j", x, x, dtype=np.float64)  # sum_i x_i^2 (rows of z sum to 1)

    def terms(self, z: np.ndarray, s: float) -> np.ndarray:
        """s * mean(var) * l, l_ik = x_i . mu_k / var - 1/2 sum mu_k^2 / var (M-step from z, then E-step)."""
        sums = (z.T @ self.x).astype(np.float64)  # (K, r)
        weight = z.sum(0, dtype=np.float64)
        mu = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        var = (self.sq - (2 * mu * sums - weight[:, None] * mu * mu).sum(0)) / weight.sum()
        var = np.maximum(var, max(_VAR_FLOOR * float(var.mean()), 1e-12))
        w = mu / var * (s * var.mean())
        off = 0.5 * np.einsum("kd,kd->k", mu, w)
        return (self.x @ w.T.astype(np.float32)) - off.astype(np.float32)


@dataclass(frozen=True)
class T:
    prior: str = "refined"  # "refined" or "anchor"
    lam: float = 1.0
    s: float = 30.0
    eta: float = 1.0
    k: int = 20
    outer: int = 10
    inner: int = 5
    dims: int = 128


def transclip(xs: list[np.ndarray], log_prior: np.ndarray, lap, p: T) -> np.ndarray:
    """z of TransCLIP's block-majorisation; ``xs``: one feature matrix per mixture sharing z (the joint
    "product" has two)."""
    mixtures = [Mixture(x) for x in xs]
    base = (p.lam * log_prior).astype(np.float32)
    z = softmax32(base.copy())
    for _ in range(p.outer):
        like = base + sum(m.terms(z, p.s) for m in mixtures)
        for _ in range(p.inner if p.eta > 0 else 1):
            z = softmax32(like + np.float32(p.eta) * (lap @ z) if p.eta > 0 else like.copy())
    return z


def run_transclip(inp: Inputs, p: T) -> dict[str, np.ndarray]:
    lp = inp.log_prior[p.prior]
    lap = inp.laplacian(p.k) if p.eta > 0 else None
    out = {v: transclip([inp.x(v, p.dims)], lp[v], lap, p) for v in VIEWS}
    out["joint"] = transclip([inp.x("concat", 128)], lp["joint"], lap, p)
    out["joint-product"] = transclip([inp.x(v, p.dims) for v in VIEWS], lp["joint"], lap, p)
    return out


@dataclass(frozen=True)
class A:
    prior: str = "refined"
    lam: float = 1.0
    s: float = 30.0
    rounds: int = 3
    dims: int = 128


def alternate(xs: list[np.ndarray], log_prior: np.ndarray, step, p: A) -> np.ndarray:
    mixtures = [Mixture(x) for x in xs]
    base = (p.lam * log_prior).astype(np.float32)
    z = softmax32(base.copy())
    for r in range(p.rounds):
        f = propagate(z, step, alpha=ALPHA, iterations=ITERATIONS)
        if r == p.rounds - 1:
            break
        z = softmax32(base + sum(m.terms(f, p.s) for m in mixtures))
    return sharpen(f, SHARPEN)


def run_alt(inp: Inputs, p: A) -> dict[str, np.ndarray]:
    lp = inp.log_prior[p.prior]
    step = inp.step()
    out = {v: alternate([inp.x(v, p.dims)], lp[v], step, p) for v in VIEWS}
    out["joint"] = alternate([inp.x("concat", 128)], lp["joint"], step, p)
    out["joint-product"] = alternate([inp.x(v, p.dims) for v in VIEWS], lp["joint"], step, p)
    return out


def run_graph(inp: Inputs) -> dict[str, np.ndarray]:
    c = inp.cat
    priors = {v: c.post(i) for i, v in enumerate(VIEWS)}
    priors["joint"] = c.joint()
    return {v: graph_step(inp, priors[v]) for v in OUTS}


def refined(inp: Inputs) -> dict[str, np.ndarray]:
    c = inp.cat
    return {"title": c.post(0), "gloss": c.post(1), "joint": c.joint()}


# ---------------------------------------------------------------- grid


def score(inp: Inputs, out: dict[str, np.ndarray], rows: np.ndarray, joint: str = "joint") -> list[float]:
    g = inp.cat.gold[rows]
    return [rg.acc(g, out[v if v != "joint" else joint][rows].argmax(1)) for v in OUTS]


SPACES = {
    # 216 + 48 settings
    "main": {
        "transclip": [T(prior, lam, s, eta, k) for prior, lam, s, eta, k in itertools.product(
            ("refined", "anchor"), (0.5, 1.0, 2.0), (3.0, 10.0, 30.0, 100.0), (0.0, 1.0, 3.0, 10.0, 30.0), (10, 20))
            if not (eta == 0 and k != 20)],
        "alt": [A(prior, lam, s, rounds) for prior, lam, s, rounds in itertools.product(
            ("refined", "anchor"), (0.5, 1.0, 2.0), (3.0, 10.0, 30.0, 100.0), (2, 3))],
    },
    # the main grid's TransCLIP winner sat at its edge s = 3: smaller likelihood weights (s = 0: no mixture,
    # the prior and the neighbour term alone), iterations and PCA axes around it
    "edge": {
        "transclip": [T("refined", lam, s, eta, k, outer, 5, dims) for lam, s, eta, k, outer, dims in itertools.product(
            (0.5, 1.0, 2.0), (0.0, 1.0, 3.0), (5.0, 10.0, 20.0), (10, 20), (5, 10), (64, 128))],
    },
}


def cmd_grid(inps: list[Inputs], space: str) -> None:
    print("\n## Tune halves; score = mean over catalogs of mean(title, gloss, joint) accuracy\n")
    ref = {i.cat.name: score(i, refined(i), i.cat.tune) for i in inps}
    gr = {i.cat.name: score(i, run_graph(i), i.cat.tune) for i in inps}
    for name, d in (("refined", ref), ("graph (today)", gr)):
        print(f"{name}: " + ", ".join(f"{n} " + "/".join(f"{a:.3f}" for a in v) for n, v in d.items())
              + f"; score {np.mean([np.mean(v) for v in d.values()]):.4f}")
    results = []
    grids = SPACES[space]
    t0 = time.perf_counter()
    for method, configs in grids.items():
        for p in configs:
            per = {}
            for i in inps:
                out = run_transclip(i, p) if method == "transclip" else run_alt(i, p)
                per[i.cat.name] = {j: score(i, out, i.cat.tune, j) for j in ("joint", "joint-product")}
            for j in ("joint", "joint-product"):
                s = float(np.mean([np.mean(v[j]) for v in per.values()]))
                results.append((s, method, p, j, {n: v[j] for n, v in per.items()}))
            print(f"{time.perf_counter() - t0:7.1f}s {method} {p} "
                  + " ".join(f"{r[3]} {r[0]:.4f}" for r in results[-2:]), flush=True)
    results.sort(key=lambda r: -r[0])
    print("\n| score | method | setting | joint | " + " | ".join(f"{i.cat.name} t/g/j" for i in inps) + " |")
    print("|---|---|---|---|" + "---|" * len(inps))
    for s, method, p, j, per in results[:25]:
        print(f"| {s:.4f} | {method} | {asdict(p)} | {j} | "
              + " | ".join("/".join(f"{a:.3f}" for a in per[i.cat.name]) for i in inps) + " |")
    for method in grids:
        rs = [r for r in results if r[1] == method]
        print(f"\nbest score per factor value, {method}:")
        for fname in asdict(rs[0][2]):
            vals = sorted({getattr(r[2], fname) for r in rs}, key=str)
            if len(vals) > 1:
                print(f"- {fname}: " + ", ".join(f"{v}: {max(r[0] for r in rs if getattr(r[2], fname) == v):.4f}"
                                                 for v in vals))
        print("- joint: " + ", ".join(f"{j}: {max(r[0] for r in rs if r[3] == j):.4f}"
                                      for j in ("joint", "joint-product")))
        best = rs[0]
        json.dump({"method": method, "setting": asdict(best[2]), "joint": best[3], "score": best[0], "space": space},
                  open(CACHE / f"best-transductive-{method}-{space}.json", "w"))


# ---------------------------------------------------------------- report


def timed(fn, *a, repeat: int = 2):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*a)
        best = min(best, time.perf_counter() - t)
    return out, best


def cmd_report(inps: list[Inputs]) -> None:
    # each method's best tune score over every grid space run
    chosen = {m: max((json.load(open(f)) for f in CACHE.glob(f"best-transductive-{m}-*.json")),
                     key=lambda r: r["score"]) for m in ("transclip", "alt")}
    pt = T(**chosen["transclip"]["setting"])
    pa = A(**chosen["alt"]["setting"])
    print("\n## Held-out halves, settings fixed on the MiniLM tune halves\n")
    print(f"transclip: {chosen['transclip']} \nalt: {chosen['alt']}\n")
    print("| catalog | view | refined (ECE) | graph, today (ECE) | TransCLIP (ECE raw / label-free cal.) | "
          "alt (ECE raw / cal.) | supervised LR |")
    print("|---|---|---|---|---|---|---|")
    costs = []
    for i in inps:
        c = i.cat
        ceil = rg.supervised_ceiling(c)
        ref = refined(i)
        gr, t_graph = timed(run_graph, i)
        t = time.perf_counter()
        for v in VIEWS:  # the per-view PCA TransCLIP needs (the joint's points are the graph's)
            i.feats.pop((v, pt.dims), None)
            i.x(v, pt.dims)
        t_pca = time.perf_counter() - t
        tc, t_tc = timed(run_transclip, i, pt)
        al, t_al = timed(run_alt, i, pa)
        tc["joint"] = tc[chosen["transclip"]["joint"]]
        al["joint"] = al[chosen["alt"]["joint"]]
        tc_cal, al_cal = rg.recalibrate(tc), rg.recalibrate(al)
        m = ~c.tune
        g = c.gold[m]
        for v in OUTS:
            sup = ceil["concat_heldout" if v == "joint" else f"{v}_heldout"]
            cells = [f"{rg.acc(g, d[v][m].argmax(1)):.3f} ({rg.ece(d[v][m], g):.3f})" for d in (ref, gr)]
            for d, cal in ((tc, tc_cal), (al, al_cal)):
                cells.append(f"{rg.acc(g, d[v][m].argmax(1)):.3f} ({rg.ece(d[v][m], g):.3f} / "
                             f"{rg.ece(cal[v][m], g):.3f})")
            print(f"| {c.name} | {v} | " + " | ".join(cells) + f" | {sup:.3f} |", flush=True)
        conf = {v: (float(tc[v][m].max(1).mean()), rg.acc(g, tc[v][m].argmax(1))) for v in OUTS}
        print("|  | TransCLIP mean confidence vs accuracy: "
              + ", ".join(f"{v} {a:.3f}/{b:.3f}" for v, (a, b) in conf.items()) + " | | | | | |")
        # alt's overconfidence: its F unsharpened (power 1 instead of the product's sqrt(2)), and fix 2 of
        # research_graph (the power that matches the refined posterior's mean max-probability), label-free
        un = {v: sharpen(al[v], 1 / SHARPEN) for v in OUTS}
        fx = {v: rg.match_confidence(un[v], ref[v])[0] for v in OUTS}
        print("|  | alt ECE unsharpened / fix 2: "
              + ", ".join(f"{v} {rg.ece(un[v][m], g):.3f} / {rg.ece(fx[v][m], g):.3f}" for v in OUTS)
              + "; mean confidence (sqrt 2) vs accuracy: "
              + ", ".join(f"{v} {al[v][m].max(1).mean():.3f}/{rg.acc(g, al[v][m].argmax(1)):.3f}" for v in OUTS)
              + " | | | | | |")
        costs.append((c.name, c.n, i.graph_s + i.projection_s, t_graph, t_pca, t_tc, t_al))
    print("\n## Cost, one thread (seconds per 10k items; the kNN graph, shared by all three, separately)\n")
    print("| catalog | items | graph points + kNN s/10k | graph step (3 propagations) s/10k | "
          "per-view PCA s/10k | TransCLIP (title, gloss, joint, joint-product) s/10k | alt (same four) s/10k |")
    print("|---|---|---|---|---|---|---|")
    for name, n, tg, a, pca, b, d in costs:
        f = 1e4 / n
        print(f"| {name} | {n} | {tg * f:.2f} | {a * f:.2f} | {pca * f:.2f} | {b * f:.2f} | {d * f:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("grid", "report"))
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--space", default="main", choices=tuple(SPACES))
    args = ap.parse_args()
    rg.threads1()
    inps = []
    for p in args.data:
        t = time.perf_counter()
        inps.append(Inputs(rg.load(p)))
        print(f"{p.name}: inputs in {time.perf_counter() - t:.1f}s", flush=True)
    if args.cmd == "grid":
        cmd_grid(inps, args.space)
    else:
        cmd_report(inps)


if __name__ == "__main__":
    main()
