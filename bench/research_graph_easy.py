"""Research (issue 23): the graph step on catalogs where zero-shot is strong (the "easy" class subsets).

    P=/work/main/.venv/bin/python
    N="feeling plant quantity shape food animal location time substance body"
    V="emotion motion possession perception creation"
    $P bench/subset_catalog.py bench/data/real /tmp/r54/data/real-easy --classes $N            # and real-mpnet
    $P bench/subset_catalog.py bench/data/real-verbs /tmp/r54/data/real-verbs-easy --classes $V  # and -mpnet
    export PYTHONPATH=$PWD DO_NOT_TRACK=1 PREFECT_HOME=/tmp/r54/prefect_home GRAPH_CACHE=/tmp/r54/cache
    $P bench/research_graph_easy.py product DATA... --graph-k 0 10 20 30 --db /tmp/r54/db   # the product's figures
    $P bench/research_graph_easy.py grid DATA...                                             # settings, halves

``product``: one ``pairwise run --gold-column label --graph-k K`` per catalog and K (a child process, the
product as installed), then its ``agreement_metrics`` (gold accuracy and ECE, methods base / pairwise / refined;
with K > 0 'refined' is the graph's label) and the gold accuracy of the same labels on the tune and held-out
halves (``np.random.default_rng(0).random(n) < 0.5`` in the file's row order, research_graph.py's split).

``grid``: label-free, the product's own graph code on research_graph.py's inputs (the pairwise label,
``MixtureRefiner``, label-free ``cross_view_weights``, fitted on the whole catalog): the points
(``GraphProjection``, PCA ``dims``; or the full concatenated unit views), ``tasks.graph.neighbours`` (faiss IVF,
seed 0), ``edge_weights``/``undirected``/``transition``/``propagate``, then the label-free sqrt(2) sharpening
for ECE. Settings k x gamma x alpha x iterations x PCA axes (``--space``) are scored on the tune half (mean of
title, gloss and joint accuracy); the held-out half is reported for today's setting, each catalog's tune
winner and the winner of the mean over catalogs. The supervised ceiling is research_graph.py's (5-fold
logistic regression, C = 1, stratified, seed 0, on every gold label; joint: concatenated views).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from research_graph_dims import ACCURACY  # noqa: E402  (the halves' gold accuracy, per view and joint)

PAIRWISE = os.environ.get("PAIRWISE", "/work/main/.venv/bin/pairwise")
OUTS = ("title", "gloss", "joint")


# ---------------------------------------------------------------- product runs


# a product run with tasks.graph's constants set (``--set``): the product's code, its module constants changed in
# the child process only (as bench/research_graph_dims.py does for DIMS)
RUN_SET = ("import sys, json, tasks.graph as g; [setattr(g, k, v) for k, v in json.loads(sys.argv[1]).items()]; "
           "from flows.cli import main; sys.exit(main(sys.argv[2:]))")


def product_run(data: Path, k: int, folder: Path, constants: dict | None = None) -> dict:
    tag = "".join(f"-{name}{value}" for name, value in sorted((constants or {}).items()))
    db = folder / f"{data.name}-k{k}{tag}.duckdb"
    if not db.exists():
        head = [sys.executable, "-c", RUN_SET, json.dumps(constants)] if constants else [PAIRWISE]
        cmd = [*head, "run", "--items", str(data / "items.parquet"), "--classes", str(data / "classes.parquet"),
               "--db", str(db), "--gold-column", "label", "--graph-k", str(k), "--run-id", f"k{k}", "--quiet"]
        t = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            db.unlink(missing_ok=True)
            sys.exit(f"{data.name} k={k} failed: {run.stderr.strip().splitlines()[-3:]}")
        print(f"  ({' '.join(cmd)}: {time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    ids = pq.read_table(data / "items.parquet", columns=["item_id"]).column(0)
    halves = pa.table({"item_id": ids, "tune": np.random.default_rng(0).random(len(ids)) < 0.5})
    out: dict = {"metrics": {}, "halves": {}}
    with duckdb.connect(str(db), read_only=True) as con:
        for method, metric, view, value in con.execute(
                "SELECT method, metric, modality_a, value FROM agreement_metrics WHERE modality_b = 'gold' "
                "AND metric IN ('gold_accuracy', 'gold_ece')").fetchall():
            out["metrics"][(method, metric, view)] = value
        con.register("halves", halves)
        for view, tune, value in con.execute(ACCURACY).fetchall():
            out["halves"][(view, "tune" if tune else "held-out")] = value
        details = json.loads(con.execute("SELECT details FROM runs").fetchone()[0])
    out["graph"] = details.get("graph")
    return out


def cmd_product(datas: list[Path], ks: list[int], folder: Path, constants: dict | None = None) -> None:
    import research_graph as rg

    folder.mkdir(parents=True, exist_ok=True)
    if constants:
        print(f"\ntasks.graph constants set in the run's process: {constants}")
    for data in datas:
        runs = {k: product_run(data, k, folder, constants if k else None) for k in ks}
        ceil = rg.supervised_ceiling(rg.load(data))
        n = pq.read_metadata(data / "items.parquet").num_rows
        print(f"\n### {data.name} ({n} items): gold accuracy (gold ECE), whole catalog; product runs\n")
        print("| view | base | pairwise | " + " | ".join(("refined, k 0" if k == 0 else f"graph k {k}") for k in ks)
              + " | supervised LR |")
        print("|---|---|---|" + "---|" * len(ks) + "---|")
        first = runs[ks[0]]["metrics"]
        for v in OUTS:
            base = first.get(("base", "gold_accuracy", v))
            pair = first.get(("pairwise", "gold_accuracy", v))
            cells = []
            for k in ks:
                m = runs[k]["metrics"]
                cells.append(f"{m[('refined', 'gold_accuracy', v)]:.4f} ({m[('refined', 'gold_ece', v)]:.3f})")
            sup = ceil["concat" if v == "joint" else v]
            print(f"| {v} | " + (f"{base:.4f}" if base is not None else "-") + " | "
                  + (f"{pair:.4f}" if pair is not None else "-") + " | " + " | ".join(cells) + f" | {sup:.4f} |")
        print("\ntune / held-out halves (the same runs):\n")
        print("| view | " + " | ".join(f"k {k}" for k in ks) + " | supervised LR held-out |")
        print("|---|" + "---|" * len(ks) + "---|")
        for v in OUTS:
            cells = [f"{runs[k]['halves'][(v, 'tune')]:.4f} / {runs[k]['halves'][(v, 'held-out')]:.4f}" for k in ks]
            sup = ceil[("concat" if v == "joint" else v) + "_heldout"]
            print(f"| {v} | " + " | ".join(cells) + f" | {sup:.4f} |")
        for k in ks:
            g = runs[k]["graph"]
            if g:
                print(f"\nk {k}: alpha {g.get('alpha')}, power {g.get('power')}, iterations {g.get('iterations')}, "
                      f"dims {g.get('dims')}, index {g.get('index')}, recall {g.get('recall')}, sharpen {g.get('sharpen')}, "
                      f"total {g.get('total_s')} s")
        sys.stdout.flush()


# ---------------------------------------------------------------- label-free grid on the halves


def grid_inputs(data: Path, kmax: int, dims_list: list[int]):
    import research_graph as rg
    from research_transductive import projection
    from tasks.graph import neighbours

    cat = rg.load(data)
    priors = {"title": cat.post(0), "gloss": cat.post(1), "joint": cat.joint()}
    nbs = {}
    for dims in dims_list:
        f = rg.CACHE / f"{cat.name}-easy-ivf-d{dims}-k{kmax}.npz"
        if f.exists():
            z = np.load(f)
            nbs[dims] = (z["ids"], z["cos"])
            continue
        units = {v: cat.x[v] for v in rg.VIEWS}
        if dims:
            points = projection(units, dims)
        else:  # the full concatenated unit views, no PCA
            points = rg.unit(np.concatenate([units[v] for v in rg.VIEWS], axis=1))
        ids, cos, _, _ = neighbours(np.ascontiguousarray(points, dtype=np.float32), kmax, 0)
        np.savez(f, ids=ids, cos=cos)
        nbs[dims] = (ids, cos)
    return cat, priors, nbs


def propagated(cat, priors, nb, k, gamma, alpha, iters) -> dict[str, np.ndarray]:
    from pairwise_core.graph import adjacency, edge_weights, propagate, transition, undirected

    ids, cos = nb
    ids, cos = ids[:, :k], np.nan_to_num(cos[:, :k].astype(np.float64), nan=0.0)
    cos = np.where(ids < 0, 0.0, cos)
    ids = np.where(ids < 0, 0, ids)
    step = transition(undirected(adjacency(ids, edge_weights(cos, gamma), cat.n)), symmetric=False)
    return {v: propagate(priors[v], step, alpha=alpha, iterations=iters) for v in OUTS}


DEFAULT = (20, 1.0, 0.8, 10, 128)  # tasks/graph.py: k, edge power, alpha, iterations, PCA axes
SPACES = {
    "first": dict(k=(5, 10, 20, 30, 50), gamma=(1.0, 3.0), alpha=(0.5, 0.7, 0.8, 0.9, 0.95), iters=(10, 20),
                  dims=(128, 64, 0)),
    # the first grid's winner sat at its alpha and gamma edges
    "edge": dict(k=(10, 20, 30), gamma=(1.0, 3.0, 5.0), alpha=(0.7, 0.8, 0.9, 0.95, 0.99), iters=(5, 10, 20),
                 dims=(128, 64)),
}
SPACE = SPACES["first"]


def fitted_power(p: np.ndarray, gold: np.ndarray) -> float:
    """The power of p that minimises the gold log loss on these rows (the product fits one per fold)."""
    lp = np.log(np.maximum(p, 1e-12))
    grid = np.geomspace(0.25, 8, 61)
    loss = [-np.mean(log_softmax_rows(lp * b)[np.arange(len(gold)), gold]) for b in grid]
    return float(grid[int(np.argmin(loss))])


def log_softmax_rows(s: np.ndarray) -> np.ndarray:
    s = s - s.max(1, keepdims=True)
    return s - np.log(np.exp(s).sum(1, keepdims=True))


def cmd_grid(datas: list[Path], out_json: Path, space: str) -> None:
    global SPACE
    SPACE = SPACES[space]
    import research_graph as rg
    from pairwise_core.graph import sharpen

    kmax = 50  # the neighbours' cache is shared by the spaces
    cats = {}
    for data in datas:
        t = time.perf_counter()
        cats[data.name] = grid_inputs(data, kmax, [0, 64, 128] if space == "first" else list(SPACE["dims"]))
        print(f"{data.name}: inputs in {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    configs = list(itertools.product(*SPACE.values()))
    if DEFAULT not in configs:
        configs.append(DEFAULT)
    scores: dict[tuple, dict[str, dict[str, list[float]]]] = {}
    t = time.perf_counter()
    for cfg in configs:
        k, gamma, alpha, iters, dims = cfg
        scores[cfg] = {}
        for name, (cat, priors, nbs) in cats.items():
            prop = propagated(cat, priors, nbs[dims], k, gamma, alpha, iters)
            scores[cfg][name] = {h: [rg.acc(cat.gold[m], prop[v][m].argmax(1)) for v in OUTS]
                                 for h, m in (("tune", cat.tune), ("held-out", ~cat.tune))}
    print(f"grid: {len(configs)} settings x {len(cats)} catalogs in {time.perf_counter() - t:.0f} s",
          file=sys.stderr, flush=True)
    json.dump({json.dumps(c): s for c, s in scores.items()}, open(out_json, "w"))

    def tune(cfg, name):
        return float(np.mean(scores[cfg][name]["tune"]))

    def mean_tune(cfg):
        return float(np.mean([tune(cfg, n) for n in cats]))

    fmt = lambda c: f"k {c[0]}, cos^{c[1]:g}, alpha {c[2]}, {c[3]} it, " + (f"PCA {c[4]}" if c[4] else "no PCA")
    best_all = max(configs, key=mean_tune)
    print(f"\n## Grid: {len(configs)} settings on the tune halves (score: mean of title, gloss, joint accuracy)\n")
    print(f"today's setting ({fmt(DEFAULT)}): mean tune score {mean_tune(DEFAULT):.4f}; best over the catalogs' "
          f"mean: {fmt(best_all)}, {mean_tune(best_all):.4f}\n")
    print("best tune score per factor value (mean over catalogs):")
    for i, fname in enumerate(SPACE):
        print(f"- {fname}: " + ", ".join(f"{v}: {max(mean_tune(c) for c in configs if c[i] == v):.4f}"
                                         for v in SPACE[fname]))
    print("\nper catalog, best tune score per factor value:")
    for name in cats:
        print(f"- {name}: " + "; ".join(
            f"{fname} " + ", ".join(f"{v}: {max(tune(c, name) for c in configs if c[i] == v):.4f}" for v in SPACE[fname])
            for i, fname in enumerate(SPACE)))

    print("\n## Held-out halves: refined, today's setting, each catalog's tune winner, the mean's winner\n")
    print("ECE: label-free sqrt(2) sharpening / a power fitted on the tune half's gold (the product fits one per "
          "fold)\n")
    print("| catalog | view | base | pairwise | refined (ECE) | today (ECE) | own tune winner | mean's winner (ECE) "
          "| supervised LR |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (cat, priors, nbs) in cats.items():
        ceil = rg.supervised_ceiling(cat)
        own = max(configs, key=lambda c: tune(c, name))
        m = ~cat.tune
        gold = cat.gold[m]
        today = propagated(cat, priors, nbs[DEFAULT[4]], *DEFAULT[:4])
        win = propagated(cat, priors, nbs[best_all[4]], *best_all[:4])

        def eces(f):
            fit = sharpen(f, fitted_power(f[cat.tune], cat.gold[cat.tune]))[m]
            return f"{rg.ece(sharpen(f, math.sqrt(2))[m], gold):.3f} / {rg.ece(fit, gold):.3f}"

        for i, v in enumerate(OUTS):
            b = f"{rg.acc(gold, cat.base[v][m]):.4f}" if v != "joint" else "-"
            p = f"{rg.acc(gold, cat.pair[v][m]):.4f}" if v != "joint" else "-"
            r = priors[v][m]
            td = today[v][m]
            sup = ceil[("concat" if v == "joint" else v) + "_heldout"]
            print(f"| {name} | {v} | {b} | {p} | {rg.acc(gold, r.argmax(1)):.4f} ({rg.ece(r, gold):.3f}) | "
                  f"{rg.acc(gold, td.argmax(1)):.4f} ({eces(today[v])}) | "
                  f"{scores[own][name]['held-out'][i]:.4f} | {scores[best_all][name]['held-out'][i]:.4f} "
                  f"({eces(win[v])}) | {sup:.4f} |")
        print(f"| {name} | own tune winner: {fmt(own)} (tune {tune(own, name):.4f} vs today {tune(DEFAULT, name):.4f}; "
              f"held-out mean {np.mean(scores[own][name]['held-out']):.4f} vs today "
              f"{np.mean(scores[DEFAULT][name]['held-out']):.4f}) | | | | | | | |")
    print("\nheld-out mean(title, gloss, joint), today vs the mean's winner vs each catalog's own winner:")
    for name in cats:
        own = max(configs, key=lambda c: tune(c, name))
        print(f"- {name}: today {np.mean(scores[DEFAULT][name]['held-out']):.4f}, mean's winner "
              f"{np.mean(scores[best_all][name]['held-out']):.4f}, own winner {np.mean(scores[own][name]['held-out']):.4f}")
    print("\ntop 10 settings by mean tune score (per catalog tune | held-out mean):")
    for c in sorted(configs, key=mean_tune, reverse=True)[:10]:
        print(f"- {fmt(c)}: {mean_tune(c):.4f}; " + ", ".join(
            f"{n} {tune(c, n):.4f} | {np.mean(scores[c][n]['held-out']):.4f}" for n in cats))


def cmd_summary(files: list[Path]) -> None:
    """Several grids' JSON (the same settings, different catalogs): the winner of each file's mean and of the
    mean over every catalog, held-out per catalog against today's setting."""
    grids = [{tuple(json.loads(c)): s for c, s in json.load(open(f)).items()} for f in files]
    configs = [c for c in grids[0] if all(c in g for g in grids)]
    scores = {c: {n: s for g in grids for n, s in g[c].items()} for c in configs}
    names = list(scores[configs[0]])
    default = tuple(json.loads(json.dumps(list(DEFAULT))))

    def mean(c, half, which):
        return float(np.mean([np.mean(scores[c][n][half]) for n in which]))

    fmt = lambda c: f"k {c[0]}, cos^{c[1]:g}, alpha {c[2]}, {c[3]} it, " + (f"PCA {c[4]}" if c[4] else "no PCA")
    picks = {f"winner of {f.name}": max(configs, key=lambda c, g=g: mean(c, "tune", list(g[configs[0]])))
             for f, g in zip(files, grids)}
    picks["winner of all"] = max(configs, key=lambda c: mean(c, "tune", names))
    print("| setting | " + " | ".join(names) + " | mean |")
    print("|---|" + "---|" * (len(names) + 1))
    for label, c in (("today: " + fmt(default), default), *((f"{k}: {fmt(c)}", c) for k, c in picks.items())):
        print(f"| {label} | " + " | ".join(f"{np.mean(scores[c][n]['held-out']):.4f}" for n in names)
              + f" | {mean(c, 'held-out', names):.4f} |")
    print("\n(cells: held-out mean of title, gloss and joint accuracy; the winners chosen on the tune halves)")
    wins = [c for c in configs if all(np.mean(scores[c][n]["tune"]) > np.mean(scores[default][n]["tune"]) for n in names)]
    print(f"\nsettings above today's on the tune half of every catalog: {len(wins)}")
    for c in sorted(wins, key=lambda c: -mean(c, "tune", names))[:10]:
        print(f"- {fmt(c)}: tune gain " + ", ".join(
            f"{n} {np.mean(scores[c][n]['tune']) - np.mean(scores[default][n]['tune']):+.4f}" for n in names)
            + "; held-out gain " + ", ".join(
            f"{np.mean(scores[c][n]['held-out']) - np.mean(scores[default][n]['held-out']):+.4f}" for n in names))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cmd", choices=("product", "grid", "summary"))
    ap.add_argument("data", nargs="+", type=Path)
    ap.add_argument("--graph-k", nargs="+", type=int, default=[0, 10, 20, 30])
    ap.add_argument("--db", type=Path, default=Path("/tmp/r54/db"))
    ap.add_argument("--out", type=Path, default=Path("/tmp/r54/grid.json"))
    ap.add_argument("--space", default="first", choices=tuple(SPACES))
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="product: tasks.graph constants for the runs with k > 0, e.g. ALPHA=0.99 POWER=5 DIMS=64")
    args = ap.parse_args()
    if args.cmd == "product":
        constants = {a.split("=")[0]: json.loads(a.split("=")[1]) for a in args.set}
        cmd_product(args.data, args.graph_k, args.db, constants)
    elif args.cmd == "summary":
        cmd_summary(args.data)
    else:
        import faiss

        faiss.omp_set_num_threads(1)
        cmd_grid(args.data, args.out, args.space)


if __name__ == "__main__":
    main()
