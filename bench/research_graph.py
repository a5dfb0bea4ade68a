"""Research: propagating the refined posteriors over a kNN graph of the catalog (ZLaP / TransCLIP style).

    cd /work/wt/graph-research
    export PYTHONPATH=$PWD DO_NOT_TRACK=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
    PY=/work/main/.venv/bin/python   # + faiss-cpu==1.15.1 hnswlib==0.8.0
    $PY bench/research_graph.py ceiling bench/data/real bench/data/real-verbs     # 5-fold logistic regression
    $PY bench/research_graph.py grid    bench/data/real bench/data/real-verbs     # choose on the tune halves
    $PY bench/research_graph.py report  bench/data/real bench/data/real-verbs     # held-out, ECE, inductive
    $PY bench/research_graph.py ann --rows 200000                                 # ANN libraries, synthetic

Single thread throughout (faiss.omp_set_num_threads(1), hnswlib num_threads=1). Seeded.

Inputs per catalog and view, as the product computes them (label-free): the pairwise label
(``PairwiseClassifier`` defaults), the ``MixtureRefiner`` (defaults) fitted on the whole catalog, its log
terms s_v (n, K), and the label-free weights of ``pairwise_core.joint.cross_view_weights``: the view's
refined posterior P_v = softmax(own_v * s_v), the joint P_j = softmax(sum_v joint_v * s_v).

Graph (label-free, whole catalog): each item's k nearest neighbours (self excluded) by inner product of unit
vectors, either per view or on the concatenated unit views [x_t, x_g] / sqrt(2) (cos = mean of the views'
cosines), found by the ANN index (pass 1 trains on a seeded sample: PCA / quantiser; pass 2 adds chunks;
pass 3 queries chunks). Edge weight w_ij = max(cos_ij, 0) ** gamma; W = A + A^T (A the directed kNN
weights).

Propagation of Y (n, K) (a refined posterior; a row with no posterior is 0):
    sym:  S = D^-1/2 W D^-1/2,  D = diag(W 1)
    rw :  S = D^-1 W            (rows of S sum to 1, so F stays a distribution)
    F_0 = Y,  F_{t+1} = alpha S F_t + (1 - alpha) Y,  t < iters;  P = F / F.sum(1)

Calibration fix (label-free): the propagated views' log P'_v go through ``cross_view_weights`` as terms,
exactly as the refiner's log terms do: P''_v = softmax(own'_v log P'_v), joint'' = softmax(sum_v joint'_v
log P'_v).

Inductive (new items, no rebuild): Q_new = (1 - alpha) Y_new + alpha * sum_j w_j F_j / sum_j w_j over
its k neighbours among the indexed items (w_j = max(cos, 0) ** gamma), F the propagated posteriors.

Scoring only: gold accuracy, weighted F1, ECE (10 equal-width bins of the max probability); tune half =
``np.random.default_rng(0).random(n) < 0.5``.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from pairwise_core import MixtureRefiner, PairwiseClassifier, embeddings
from pairwise_core.joint import cross_view_weights
from pairwise_core.refine import log_softmax

VIEWS = ("title", "gloss")
CACHE = Path(os.environ.get("GRAPH_CACHE", "/tmp/research_graph_cache"))


def threads1() -> None:
    import faiss

    faiss.omp_set_num_threads(1)


# ---------------------------------------------------------------- data


def unit(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def softmax(s: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(np.asarray(s, np.float64)))


@dataclass
class Catalog:
    name: str
    gold: np.ndarray
    k: int
    x: dict[str, np.ndarray]  # unit float32
    base: dict[str, np.ndarray]
    pair: dict[str, np.ndarray]
    terms: np.ndarray  # (n, V, K) refiner log terms
    own: np.ndarray  # (V,) label-free view weights
    joint_w: np.ndarray  # (V,) label-free joint weights
    tune: np.ndarray = field(default=None)

    @property
    def n(self) -> int:
        return self.gold.size

    def post(self, v: int) -> np.ndarray:
        return softmax(self.own[v] * self.terms[:, v])

    def joint(self) -> np.ndarray:
        return softmax(np.einsum("nvk,v->nk", self.terms, self.joint_w))

    def concat(self) -> np.ndarray:
        return np.concatenate([self.x[v] for v in VIEWS], axis=1) / np.float32(np.sqrt(len(VIEWS)))


def fit_refined(x_raw: dict[str, np.ndarray], c_raw: dict[str, np.ndarray], fit_rows: np.ndarray | None = None):
    """Pairwise labels, refiner log terms and label-free weights; the models fitted on ``fit_rows`` (all rows
    by default) and applied to every row."""
    n = next(iter(x_raw.values())).shape[0]
    fit_rows = np.arange(n) if fit_rows is None else fit_rows
    base, pair, terms = {}, {}, []
    for v in VIEWS:
        clf = PairwiseClassifier(c_raw[v]).fit(x_raw[v][fit_rows])
        res = clf.classify(x_raw[v])
        base[v], pair[v] = np.asarray(res.base_label), np.asarray(res.label)
        ref = MixtureRefiner(c_raw[v]).fit(x_raw[v][fit_rows], pair[v][fit_rows])
        terms.append(ref.log_terms(x_raw[v], pair[v]).astype(np.float64))
    terms = np.stack(terms, axis=1)
    present = np.ones(terms.shape[:2], bool)
    own, joint_w = cross_view_weights(terms[fit_rows], present[fit_rows])
    return base, pair, terms, own, joint_w


def load(path: Path) -> Catalog:
    items = pq.read_table(path / "items.parquet")
    classes = pq.read_table(path / "classes.parquet")
    names = classes.column("class_name").to_pylist()
    index = {name: k for k, name in enumerate(names)}
    gold = np.array([index[label] for label in items.column("label").to_pylist()])
    x_raw = {v: embeddings(items, f"{v}_embedding") for v in VIEWS}
    c_raw = {v: embeddings(classes, f"{v}_embedding") for v in VIEWS}
    CACHE.mkdir(parents=True, exist_ok=True)
    cache = CACHE / f"{path.name}.npz"
    if cache.exists():
        z = np.load(cache)
        base = {v: z[f"base_{v}"] for v in VIEWS}
        pair = {v: z[f"pair_{v}"] for v in VIEWS}
        terms, own, joint_w = z["terms"], z["own"], z["joint_w"]
    else:
        base, pair, terms, own, joint_w = fit_refined(x_raw, c_raw)
        np.savez(cache, terms=terms, own=own, joint_w=joint_w, **{f"base_{v}": base[v] for v in VIEWS},
                 **{f"pair_{v}": pair[v] for v in VIEWS})
    cat = Catalog(path.name, gold, len(names), {v: unit(x_raw[v]) for v in VIEWS}, base, pair, terms, own, joint_w)
    cat.tune = np.random.default_rng(0).random(cat.n) < 0.5
    cat.x_raw, cat.c_raw = x_raw, c_raw
    return cat


# ---------------------------------------------------------------- kNN


def knn_faiss_hnsw(base: np.ndarray, k: int, queries: np.ndarray | None = None, *, m: int = 32, ef_c: int = 80,
                   ef_s: int = 64, pca: int = 0, sq8: bool = False, chunk: int = 50_000, seed: int = 0,
                   train_rows: int = 50_000, stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, cos) of each query's k nearest base rows by inner product (unit rows); self excluded when
    ``queries`` is None. Streams: PCA (and SQ8) trained on a seeded sample, then chunks added and queried."""
    import faiss

    threads1()
    t0 = time.perf_counter()
    d = base.shape[1]
    rng = np.random.default_rng(seed)
    sample = base[np.sort(rng.choice(base.shape[0], min(train_rows, base.shape[0]), replace=False))]
    pre = None
    dim = d
    if pca:
        pre = faiss.PCAMatrix(d, pca)
        pre.train(np.ascontiguousarray(sample))
        dim = pca
    if sq8:
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, m, faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = ef_c
    if sq8:
        s = pre.apply(np.ascontiguousarray(sample)) if pre is not None else sample
        index.train(np.ascontiguousarray(s))
    for start in range(0, base.shape[0], chunk):
        part = np.ascontiguousarray(base[start:start + chunk])
        index.add(pre.apply(part) if pre is not None else part)
    t1 = time.perf_counter()
    index.hnsw.efSearch = max(ef_s, k + 1)
    self_query = queries is None
    queries = base if self_query else queries
    kk = k + 1 if self_query else k
    ids = np.empty((queries.shape[0], kk), np.int64)
    for start in range(0, queries.shape[0], chunk):
        part = np.ascontiguousarray(queries[start:start + chunk])
        _, ids[start:start + chunk] = index.search(pre.apply(part) if pre is not None else part, kk)
    t2 = time.perf_counter()
    if stats is not None:
        stats.update(build_s=t1 - t0, search_s=t2 - t1, bytes=_faiss_bytes(index) + (pre.A.size() * 4 if pre else 0))
    return _finish(base, queries, ids, k, self_query)


def _faiss_bytes(index) -> int:
    import faiss

    return len(faiss.serialize_index(index))


def knn_hnswlib(base: np.ndarray, k: int, queries: np.ndarray | None = None, *, m: int = 16, ef_c: int = 100,
                ef_s: int = 64, pca: int = 0, chunk: int = 50_000, seed: int = 0, train_rows: int = 50_000,
                stats: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    import hnswlib

    t0 = time.perf_counter()
    proj = None
    if pca:
        rng = np.random.default_rng(seed)
        sample = base[np.sort(rng.choice(base.shape[0], min(train_rows, base.shape[0]), replace=False))]
        mean = sample.mean(0)
        _, _, vt = np.linalg.svd(sample - mean, full_matrices=False)
        proj = (vt[:pca].T.astype(np.float32), mean.astype(np.float32))
    tr = (lambda a: (a - proj[1]) @ proj[0]) if proj else (lambda a: a)
    dim = pca or base.shape[1]
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=base.shape[0], ef_construction=ef_c, M=m, random_seed=seed)
    for start in range(0, base.shape[0], chunk):
        index.add_items(tr(base[start:start + chunk]), np.arange(start, min(start + chunk, base.shape[0])),
                        num_threads=1)
    t1 = time.perf_counter()
    self_query = queries is None
    queries = base if self_query else queries
    kk = k + 1 if self_query else k
    index.set_ef(max(ef_s, kk))
    ids = np.empty((queries.shape[0], kk), np.int64)
    for start in range(0, queries.shape[0], chunk):
        ids[start:start + chunk], _ = index.knn_query(tr(queries[start:start + chunk]), k=kk, num_threads=1)
    t2 = time.perf_counter()
    if stats is not None:
        # hnswlib's own layout: data + level-0 links (2M ids) + label per element, plus upper levels (~1/M)
        per = dim * 4 + (2 * m + 1) * 4 + 8
        stats.update(build_s=t1 - t0, search_s=t2 - t1, bytes=int(base.shape[0] * per * (1 + 1 / m)))
    return _finish(base, queries, ids, k, self_query)


def knn_exact(base: np.ndarray, k: int, queries: np.ndarray | None = None, chunk: int = 2000):
    self_query = queries is None
    queries = base if self_query else queries
    kk = k + 1 if self_query else k
    ids = np.empty((queries.shape[0], kk), np.int64)
    for start in range(0, queries.shape[0], chunk):
        s = queries[start:start + chunk] @ base.T
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        ids[start:start + chunk] = np.take_along_axis(top, order, 1)
    return _finish(base, queries, ids, k, self_query)


def _finish(base, queries, ids, k, self_query):
    """Drop self (or the last extra) per row; recompute exact cosines of the found neighbours."""
    n = queries.shape[0]
    if self_query:
        keep = ids != np.arange(n)[:, None]
        # rows where self was not found: drop the last column instead
        keep[keep.all(1), -1] = False
        ids = ids[keep].reshape(n, k)
    ids = np.where(ids < 0, 0, ids)  # (a missing neighbour: should not happen at these ef)
    cos = np.einsum("nd,nkd->nk", queries, base[ids], optimize=True)
    return ids, cos.astype(np.float64)


KNN = {"faiss": knn_faiss_hnsw, "hnswlib": knn_hnswlib, "exact": knn_exact}


# ---------------------------------------------------------------- propagation


def adjacency(ids: np.ndarray, cos: np.ndarray, gamma: float, n: int | None = None) -> sp.csr_matrix:
    n = n or ids.shape[0]
    w = np.maximum(cos, 0.0) ** gamma
    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(ids.shape[0]), ids.shape[1]), ids.ravel())), shape=(n, n))
    return (a + a.T).tocsr()


def operator(w: sp.csr_matrix, norm: str) -> sp.csr_matrix:
    deg = np.asarray(w.sum(1)).ravel()
    deg = np.where(deg > 0, deg, 1.0)
    if norm == "sym":
        dm = sp.diags(1 / np.sqrt(deg))
        return (dm @ w @ dm).tocsr()
    return (sp.diags(1 / deg) @ w).tocsr()


def propagate(s: sp.csr_matrix, y: np.ndarray, alpha: float, iters: int) -> np.ndarray:
    f = y.copy()
    for _ in range(iters):
        f = alpha * (s @ f) + (1 - alpha) * y
    tot = f.sum(1, keepdims=True)
    return np.where(tot > 0, f / np.where(tot > 0, tot, 1), 1.0 / y.shape[1])


# ---------------------------------------------------------------- metrics


def ece(p: np.ndarray, gold: np.ndarray, bins: int = 10) -> float:
    conf, correct = p.max(1), p.argmax(1) == gold
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return float(sum((idx == b).sum() * abs(correct[idx == b].mean() - conf[idx == b].mean())
                     for b in range(bins) if (idx == b).any()) / conf.size)


def acc(gold, pred) -> float:
    return float(np.mean(gold == pred))


# ---------------------------------------------------------------- experiments


@dataclass(frozen=True)
class G:
    graph: str = "concat"  # "concat" or "view"
    k: int = 10
    gamma: float = 3.0
    alpha: float = 0.8
    iters: int = 10
    norm: str = "sym"
    sharp: float = 1.0  # Y = softmax(sharp * weighted log terms); inf: one-hot of the refined label


def seeds(cat: Catalog, g: G, terms=None, own=None, joint_w=None) -> dict[str, np.ndarray]:
    """The posteriors to propagate: per view and joint, sharpened by ``g.sharp``."""
    terms = cat.terms if terms is None else terms
    own = cat.own if own is None else own
    joint_w = cat.joint_w if joint_w is None else joint_w
    logits = {v: own[i] * terms[:, i] for i, v in enumerate(VIEWS)}
    logits["joint"] = np.einsum("nvk,v->nk", terms, joint_w)
    if np.isinf(g.sharp):
        return {v: np.eye(terms.shape[2])[s.argmax(1)] for v, s in logits.items()}
    return {v: softmax(g.sharp * s) for v, s in logits.items()}


def graphs(cat: Catalog, k: int, lib: str = "faiss") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """kNN lists (ids, cos) of the concatenated views and of each view, kmax neighbours, cached."""
    out = {}
    for name, vec in (("concat", cat.concat()), *((v, cat.x[v]) for v in VIEWS)):
        f = CACHE / f"{cat.name}-{lib}-{name}-{k}.npz"
        if f.exists():
            z = np.load(f)
            out[name] = (z["ids"], z["cos"])
        else:
            out[name] = KNN[lib](vec, k)
            np.savez(f, ids=out[name][0], cos=out[name][1])
    return out


def run_config(cat: Catalog, nb: dict, g: G) -> dict[str, np.ndarray]:
    """Propagated posteriors per view and joint (the joint over the concatenated graph, or the title's
    under 'view'? no: under 'view' the joint is propagated over the concat graph too)."""
    ops = {}

    def op(name):
        if name not in ops:
            ids, cos = nb[name]
            ops[name] = operator(adjacency(ids[:, :g.k], cos[:, :g.k], g.gamma), g.norm)
        return ops[name]

    y = seeds(cat, g)
    out = {}
    for v in VIEWS:
        out[v] = propagate(op("concat" if g.graph == "concat" else v), y[v], g.alpha, g.iters)
    out["joint"] = propagate(op("concat"), y["joint"], g.alpha, g.iters)
    return out


def recalibrate(prop: dict[str, np.ndarray], wide: bool = False) -> dict[str, np.ndarray]:
    """Label-free fix: the product's cross-view weights on log P'_v. The product's temperature grid starts at
    0.5 (a weight of at most sqrt(2) for a view): the propagated posteriors are underconfident and need a
    smaller temperature; with ``wide`` the grid is geomspace(0.02, 128, 81) (same log spacing). Measured: the
    product's grid (wide=False) stops at its edge (weight sqrt(2) per view) on both catalogs and calibrates
    well; the wide grid overshoots (the views' propagated posteriors share one graph, so they agree more
    than independent witnesses: overconfident, held-out ECE 0.06-0.16)."""
    import pairwise_core.joint as joint_mod

    terms = np.stack([np.log(np.maximum(prop[v], 1e-12)) for v in VIEWS], axis=1)
    present = np.ones(terms.shape[:2], bool)
    saved = joint_mod._TEMPERATURES
    if wide:
        joint_mod._TEMPERATURES = np.geomspace(0.02, 128, 81)
    try:
        own, jw = cross_view_weights(terms, present)
    finally:
        joint_mod._TEMPERATURES = saved
    out = {v: softmax(own[i] * terms[:, i]) for i, v in enumerate(VIEWS)}
    out["joint (views)"] = softmax(np.einsum("nvk,v->nk", terms, jw))
    # the propagated joint is one more propagated posterior of the same kind: the views' mean own weight
    out["joint"] = softmax(np.log(np.maximum(prop["joint"], 1e-12)) * float(own.mean()))
    out["_w"] = (own, jw)
    return out


def match_confidence(prop: np.ndarray, seed_post: np.ndarray) -> tuple[np.ndarray, float]:
    """Label-free fix 2: P'^beta (renormalised), beta such that its mean max-probability equals that of the
    posterior that was propagated (a bisection on a log grid)."""
    lp = np.log(np.maximum(prop, 1e-12))
    grid = np.geomspace(0.05, 20, 200)
    conf = np.array([softmax(lp * b).max(1).mean() for b in grid])
    b = float(grid[np.argmin(np.abs(conf - seed_post.max(1).mean()))])
    return softmax(lp * b), b


SPACES = {
    # graph, k, gamma, alpha, iters, norm, sharp
    "coarse": (("concat", "view"), (5, 10, 20, 30), (1.0, 3.0, 5.0), (0.5, 0.7, 0.8, 0.9, 0.95), (10, 20),
               ("sym", "rw"), (1.0,)),
    "sharp": (("concat",), (10, 20, 30), (1.0, 3.0), (0.6, 0.7, 0.8, 0.9), (10,), ("sym", "rw"),
              (0.5, 1.0, 2.0, 4.0, 10.0, float("inf"))),
}


def cmd_grid(cats: list[Catalog], lib: str, space: str = "coarse") -> G:
    kmax = 30
    nbs = {c.name: graphs(c, kmax, lib) for c in cats}
    res = []
    for graph, k, gamma, alpha, iters, norm, sharp in itertools.product(*SPACES[space]):
        g = G(graph, k, gamma, alpha, iters, norm, sharp)
        per = {}
        for c in cats:
            out = run_config(c, nbs[c.name], g)
            m = c.tune
            per[c.name] = [acc(c.gold[m], out[v][m].argmax(1)) for v in (*VIEWS, "joint")]
        res.append((float(np.mean([np.mean(p) for p in per.values()])), g, per))
    res.sort(key=lambda r: -r[0])
    print(f"\n## Grid ({len(res)} configs) on the tune halves, graph library {lib}; score = mean over catalogs of "
          "mean(title, gloss, joint) accuracy\n")
    base = {c.name: [acc(c.gold[c.tune], y[c.tune].argmax(1)) for y in (c.post(0), c.post(1), c.joint())]
            for c in cats}
    print("refined (no graph): " + ", ".join(f"{n} " + "/".join(f"{a:.3f}" for a in b) for n, b in base.items())
          + f"; score {np.mean([np.mean(b) for b in base.values()]):.4f}\n")
    print("| score | graph | k | gamma | alpha | iters | norm | sharp | " + " | ".join(f"{c.name} t/g/j" for c in cats) + " |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(cats))
    for s, g, per in res[:20]:
        print(f"| {s:.4f} | {g.graph} | {g.k} | {g.gamma:g} | {g.alpha} | {g.iters} | {g.norm} | {g.sharp:g} | "
              + " | ".join("/".join(f"{a:.3f}" for a in per[c.name]) for c in cats) + " |")
    # marginal best per factor value
    print("\nbest score per factor value:")
    for fname in ("graph", "k", "gamma", "alpha", "iters", "norm", "sharp"):
        vals = sorted({getattr(g, fname) for _, g, _ in res}, key=str)
        print(f"- {fname}: " + ", ".join(f"{v}: {max(s for s, g, _ in res if getattr(g, fname) == v):.4f}" for v in vals))
    # the outside measurement's setting
    ref = [r for r in res if r[1] == G("concat", 10, 3.0, 0.8, 10, "sym")]
    if ref:
        print(f"\noutside setting (concat, k10, cos^3, alpha 0.8, 10 it, sym): {ref[0][0]:.4f}")
    json.dump(res[0][1].__dict__, open(CACHE / f"best-{lib}-{space}.json", "w"))
    return res[0][1]


def supervised_ceiling(cat: Catalog, folds: int = 5) -> dict[str, float]:
    f = CACHE / f"{cat.name}-ceiling.json"
    if f.exists():
        return json.load(open(f))
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    out = {}
    for name, x in (("title", cat.x["title"]), ("gloss", cat.x["gloss"]), ("concat", cat.concat())):
        pred = np.empty(cat.n, int)
        for fit, held in StratifiedKFold(folds, shuffle=True, random_state=0).split(x, cat.gold):
            model = LogisticRegression(C=1.0, max_iter=300).fit(x[fit], cat.gold[fit])
            pred[held] = model.predict(x[held])
        out[name] = acc(cat.gold, pred)
        out[name + "_heldout"] = acc(cat.gold[~cat.tune], pred[~cat.tune])
        print(cat.name, name, out[name], flush=True)
    json.dump(out, open(f, "w"))
    return out


def inductive(cat: Catalog, g: G, lib: str, frac: float = 0.9, seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """Pipeline (pairwise, refiner, weights, graph, propagation) on a seeded 90%; the other 10% labelled from
    their neighbours among the 90%. Returns per view and joint: (own refined acc, inductive acc,
    transductive acc of the same items on the full-catalog graph)."""
    rng = np.random.default_rng(seed)
    old = rng.random(cat.n) < frac
    oi, ni = np.flatnonzero(old), np.flatnonzero(~old)
    base, pair, terms, own, jw = fit_refined(cat.x_raw, cat.c_raw, oi)
    refined = {v: softmax(own[i] * terms[:, i]) for i, v in enumerate(VIEWS)}
    refined["joint"] = softmax(np.einsum("nvk,v->nk", terms, jw))
    post = seeds(cat, g, terms, own, jw)
    vec = {"concat": cat.concat(), **cat.x}
    res = {}
    nb_old, nb_new = {}, {}
    for name in {"concat", *(VIEWS if g.graph == "view" else ())}:
        nb_old[name] = KNN[lib](vec[name][oi], g.k)
        nb_new[name] = KNN[lib](vec[name][oi], g.k, queries=vec[name][ni])
    full = run_config(cat, graphs(cat, 30, lib), g)
    for v in (*VIEWS, "joint"):
        name = "concat" if (v == "joint" or g.graph == "concat") else v
        s = operator(adjacency(*nb_old[name], g.gamma), g.norm)
        f_old = propagate(s, post[v][oi], g.alpha, g.iters)
        ids, cos = nb_new[name]
        w = np.maximum(cos, 0) ** g.gamma
        avg = np.einsum("nk,nkc->nc", w, f_old[ids]) / np.maximum(w.sum(1, keepdims=True), 1e-12)
        q = (1 - g.alpha) * post[v][ni] + g.alpha * avg
        gold = cat.gold[ni]
        res[v] = (acc(gold, refined[v][ni].argmax(1)), acc(gold, q.argmax(1)), acc(gold, full[v][ni].argmax(1)),
                  ece(q / q.sum(1, keepdims=True), gold),
                  ece(softmax(np.sqrt(2) * np.log(np.maximum(q / q.sum(1, keepdims=True), 1e-12))), gold))
    return res


def cmd_report(cats: list[Catalog], g: G, lib: str) -> None:
    print(f"\n## Report, config {g}, library {lib}\n")
    for c in cats:
        ceil = supervised_ceiling(c)
        nb = graphs(c, 30, lib)
        prop = run_config(c, nb, g)
        fix = recalibrate(prop)
        y = seeds(c, g)
        fix2 = {v: match_confidence(prop[v], y[v]) for v in (*VIEWS, "joint")}
        print(f"\n### {c.name}: {c.n} items, {c.k} classes; label-free weights own {np.round(c.own, 4)}, joint "
              f"{np.round(c.joint_w, 4)}; after propagation own {np.round(fix['_w'][0], 3)}, joint {np.round(fix['_w'][1], 3)}\n")
        print("beta of fix 2: " + ", ".join(f"{v} {fix2[v][1]:.2f}" for v in fix2) + "\n")
        print("| half | view | base | pairwise | refined (ECE) | graph (ECE raw / fix 1 / fix 2) | supervised 5-fold LR |")
        print("|---|---|---|---|---|---|---|")
        for half, m in (("tune", c.tune), ("held-out", ~c.tune), ("all", np.ones(c.n, bool))):
            gold = c.gold[m]
            for vi, v in enumerate((*VIEWS, "joint")):
                if v == "joint":
                    before = c.joint()[m]
                    b = p = "-"
                    sup = ceil["concat"] if half == "all" else ceil["concat_heldout"] if half == "held-out" else None
                else:
                    before = c.post(vi)[m]
                    b, p = f"{acc(gold, c.base[v][m]):.3f}", f"{acc(gold, c.pair[v][m]):.3f}"
                    sup = ceil[v] if half == "all" else ceil[v + "_heldout"] if half == "held-out" else None
                after = prop[v][m]
                print(f"| {half} | {v} | {b} | {p} | {acc(gold, before.argmax(1)):.3f} ({ece(before, gold):.3f}) | "
                      f"{acc(gold, after.argmax(1)):.3f} ({ece(after, gold):.3f} / {ece(fix[v][m], gold):.3f} / "
                      f"{ece(fix2[v][0][m], gold):.3f}) | "
                      + ("-" if sup is None else f"{sup:.3f}") + " |")
            jv = fix["joint (views)"][m]
            print(f"| {half} | joint of propagated views (fixed weights) | | | | {acc(gold, jv.argmax(1)):.3f} "
                  f"({ece(jv, gold):.3f}) | |")
    print("\n## Inductive: pipeline on a seeded 90%, the other 10% from their neighbours\n")
    print("| catalog | view | refined (fit on 90%) | inductive | transductive (same items) | inductive ECE raw / "
          "sqrt(2)-sharpened |")
    print("|---|---|---|---|---|---|")
    for c in cats:
        for v, r in inductive(c, g, lib).items():
            print(f"| {c.name} | {v} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} / {r[4]:.3f} |")


def cmd_compare_libs(cats: list[Catalog], g: G) -> None:
    """Graph recall of the libraries (with and without reduction) against exact on the real catalogs'
    concatenated views, and the propagated accuracy with each graph."""
    variants = [
        ("exact", "BLAS", {}),
        ("faiss", "HNSW32 flat", {}),
        ("faiss", "HNSW32 flat, PCA 128", dict(pca=128)),
        ("faiss", "HNSW32 SQ8, PCA 128", dict(pca=128, sq8=True)),
        ("hnswlib", "M16 ef_c100", {}),
        ("hnswlib", "M16 ef_c100, PCA 128", dict(pca=128)),
    ]
    print(f"\n## Libraries on the real catalogs (concatenated views, k={g.k}), config {g}\n")
    print("| catalog | library | config | recall@k vs exact | build s | search s | held-out title / gloss / joint |")
    print("|---|---|---|---|---|---|---|")
    for c in cats:
        vec = c.concat()
        ex = None
        for lib, name, kw in variants:
            st = {}
            t = time.perf_counter()
            ids, cos = KNN[lib](vec, g.k, stats=st, **kw) if lib != "exact" else knn_exact(vec, g.k)
            if lib == "exact":
                st = dict(build_s=0.0, search_s=time.perf_counter() - t)
                ex = ids
            rec = np.mean([len(set(a) & set(b)) / g.k for a, b in zip(ids, ex)])
            nb = {"concat": (ids, cos)}
            out = run_config(c, nb, g)
            m = ~c.tune
            cells = "/".join(f"{acc(c.gold[m], out[v][m].argmax(1)):.3f}" for v in (*VIEWS, "joint"))
            print(f"| {c.name} | {lib} | {name} | {rec:.4f} | {st['build_s']:.1f} | {st['search_s']:.1f} | {cells} |",
                  flush=True)


# ---------------------------------------------------------------- ANN benchmark


def cmd_ann(rows: int, data: str, queries: int = 2000) -> None:
    files = sorted(glob.glob(f"{data}/items/*.parquet"))
    parts, got = [], 0
    for f in files:
        t = pq.read_table(f, columns=["image_embedding", "text_embedding"])
        parts.append(np.concatenate([unit(embeddings(t, c)) for c in ("image_embedding", "text_embedding")], 1)
                     / np.float32(np.sqrt(2)))
        got += t.num_rows
        if got >= rows:
            break
    x = np.ascontiguousarray(np.concatenate(parts)[:rows])
    del parts
    n, d = x.shape
    rng = np.random.default_rng(0)
    qi = np.sort(rng.choice(n, queries, replace=False))
    t = time.perf_counter()
    exact = knn_exact(x, 10, queries=x[qi])[0]  # includes self at rank 0 (a query is in the base)
    print(f"\n## ANN on {n} items of {data} (concatenated unit views, {d}-d float32), single thread\n")
    print(f"exact for {queries} queries by BLAS: {time.perf_counter() - t:.1f}s\n")
    print("| library | config | build s | search s (all n, k=10 self) | MB per 1M items | recall@10 vs exact |")
    print("|---|---|---|---|---|---|")
    configs = [
        ("faiss", "HNSW32 flat, PCA 128", dict(pca=128)),
        ("faiss", "HNSW32 SQ8, PCA 128", dict(pca=128, sq8=True)),
        ("hnswlib", "M16 ef_c100, PCA 128", dict(pca=128)),
        ("faiss", f"HNSW32 flat, {d}-d", dict()),
        ("hnswlib", f"M16 ef_c100, {d}-d", dict()),
    ]
    for lib, name, kw in configs:
        st = {}
        ids, _ = KNN[lib](x, 10, stats=st, **kw)
        # self-query: ids exclude self; exact includes self at rank 0 -> compare with exact[:, 1:] plus 9 of ids
        rec = np.mean([len(set(ids[j, :9]) & set(exact[i, 1:])) / 9 for i, j in enumerate(qi)])
        print(f"| {lib} | {name} | {st['build_s']:.1f} | {st['search_s']:.1f} | {st['bytes'] / n * 1e6 / 2**20:.0f} | "
              f"{rec:.4f} |", flush=True)


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("ceiling", "grid", "report", "libs", "ann"))
    ap.add_argument("data", nargs="*", type=Path)
    ap.add_argument("--lib", default="faiss")
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--synthetic", default="bench/data/synthetic-1000000")
    ap.add_argument("--space", default="coarse", choices=tuple(SPACES))
    ap.add_argument("--config", help="JSON of G; default: the grid's saved winner")
    args = ap.parse_args()
    threads1()
    if args.cmd == "ann":
        return cmd_ann(args.rows, args.synthetic)
    cats = []
    for p in args.data:
        t = time.perf_counter()
        cats.append(load(p))
        print(f"{p.name}: loaded in {time.perf_counter() - t:.1f}s", flush=True)
    if args.cmd == "ceiling":
        for c in cats:
            print(c.name, supervised_ceiling(c))
        return
    if args.cmd == "grid":
        cmd_grid(cats, args.lib, args.space)
        return
    g = G(**json.loads(args.config)) if args.config else G(**json.load(open(CACHE / f"best-{args.lib}-{args.space}.json")))
    if args.cmd == "libs":
        return cmd_compare_libs(cats, g)
    cmd_report(cats, g, args.lib)


if __name__ == "__main__":
    main()
