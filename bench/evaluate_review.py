"""How well annotation_issues finds known label errors: the three review routes against a supervised peer.

    .venv/bin/python bench/evaluate_review.py DATA [DATA ...] [--seeds 0 1 2] \
        [--kinds uniform confused class-conditional] [--noise 0.10] [--graph-k 0] [--jobs 2]

e.g. `bench/evaluate_review.py bench/data/real bench/data/real-verbs bench/data/real-verbs-mpnet`.
Needs the `supervised` extra (scikit-learn). DATA is a directory holding
items.parquet (item_id, title_embedding, gloss_embedding, label) and
classes.parquet. For each catalog, kind of noise (bench/review_noise.py) and
seed, a seeded `--noise` share of the labels is flipped; the truth stays in
memory and the noisy catalog is written as Parquet. Then:

- the product: one `pairwise run --gold-column label --review both --issues-below 1 --seed S`
  (with `--graph-k K` when given: 'both' is then both+neighbours, the graph's vote joined) on the
  noisy catalog (a subprocess, timed whole). Its annotation_issues rows give three routes' scores,
  1 - p(given label): zero-shot (zero_shot_p_given, the refined joint posterior, which never reads the
  labels), label-aware
  (label_aware_p_given, the out-of-fold discriminant on the given labels) and
  both (p_given, the two combined with the weights the run fitted);
- the peer (confident learning, as cleanlab ranks by default): out-of-fold
  probabilities of a LogisticRegression (C = 1) trained on the noisy labels,
  5-fold StratifiedKFold, on the L2-normalised [title, gloss] embeddings;
  score 1 - p(given label), timed. The truth is never used.

Reported per catalog and kind, per route: ROC-AUC at finding the flipped
items, average precision, precision at k = number of flips (which equals
recall at that k), recall at 2k, wall time: for the three routes the whole
`pairwise run` process (Prefect start-up included; the line under the table
gives the review's own share: fit_review_s, and pass 1 + pass 2, where the
routes' posteriors are computed), for the peer its fitting. Cells are
"mean (min–max)" over seeds. Then, per catalog and kind, which route is best
on AUC and on precision@k, and 'both' minus each single route on those two
(means over seeds). Also printed: the weights the run fitted for 'both'
(label_aware, zero_shot), from runs.details.review.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from joblib import Parallel, delayed
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from pairwise_core import embeddings
from review_noise import KINDS, flip_labels

VIEWS = ("title", "gloss")
# route -> annotation_issues column holding its p(given label)
RUN_ROUTES = {"zero-shot": "zero_shot_p_given", "label-aware": "label_aware_p_given", "both": "p_given"}
PEER = "peer: LogisticRegression, 5-fold"
METRICS = ("AUC", "AP", "P@k", "R@2k")


@dataclass
class Catalog:
    name: str
    items: pa.Table
    names: list[str]
    truth: np.ndarray  # class index per item
    x: np.ndarray  # L2-normalised [title, gloss], float32
    base: dict[str, np.ndarray]  # cosine-argmax class per item, per view, on the clean catalog


def load(path: Path) -> Catalog:
    items = pq.read_table(path / "items.parquet")
    classes = pq.read_table(path / "classes.parquet")
    names = classes.column("class_name").to_pylist()
    class_id = {name: k for k, name in enumerate(names)}
    truth = np.array([class_id[label] for label in items.column("label").to_pylist()])
    unit, base = [], {}
    for view in VIEWS:
        matrix = embeddings(items, f"{view}_embedding")  # float32: fits faster, figures within 0.001 of float64
        matrix = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
        centres = embeddings(classes, f"{view}_embedding")
        base[view] = np.argmax(matrix @ (centres / np.linalg.norm(centres, axis=1, keepdims=True)).T, axis=1)
        unit.append(matrix)
    return Catalog(path.name, items, names, truth, np.hstack(unit), base)


def run_product(noisy_path: Path, classes: Path, seed: int, workdir: Path, ids: list[str], graph_k: int = 0) -> dict:
    """`pairwise run --review both` on the noisy catalog: each route's p(given), aligned to ids, and the run's
    wall time, timings and review details."""
    db = workdir / f"review-{noisy_path.stem}.duckdb"
    command = [str(Path(sys.executable).with_name("pairwise")), "run", "--items", str(noisy_path),
               "--classes", str(classes), "--gold-column", "label", "--review", "both", "--issues-below", "1",
               "--db", str(db), "--seed", str(seed), "--graph-k", str(graph_k)]
    start = time.perf_counter()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"pairwise run failed:\n{result.stderr}")
    with duckdb.connect(str(db), read_only=True) as con:
        run_id, details = con.execute(
            "SELECT run_id, details FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
        issues = con.execute(f"SELECT item_id, {', '.join(RUN_ROUTES.values())} FROM annotation_issues "
                             "WHERE run_id = ?", [run_id]).to_arrow_table()
    db.unlink()
    position = {item_id: i for i, item_id in enumerate(ids)}
    rows = np.array([position[item_id] for item_id in issues.column("item_id").to_pylist()])
    if rows.size != len(ids):
        sys.exit(f"annotation_issues ranks {rows.size} of {len(ids)} labelled items; expected every one")
    p_given = {}
    for route, column in RUN_ROUTES.items():
        values = issues.column(column).to_numpy(zero_copy_only=False)
        if np.isnan(values).any():
            sys.exit(f"annotation_issues.{column} is NULL for some items: was the route 'both'?")
        p_given[route] = np.empty(len(ids))
        p_given[route][rows] = values
    details = json.loads(details)
    return {"p_given": p_given, "wall": wall, "timings": details["timings"], "review": details["review"]}


def peer_p_given(x: np.ndarray, noisy: np.ndarray, seed: int, jobs: int) -> np.ndarray:
    """Out-of-fold p(given label) from a LogisticRegression (C = 1) on the noisy labels.

    Folds run in `jobs` processes with one BLAS thread each: OpenBLAS's own
    threads made one fit 3 to 4 times slower on this 2-core machine.
    """
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(x, noisy))
    with threadpool_limits(1):
        fitted = Parallel(n_jobs=jobs)(
            delayed(LogisticRegression(C=1.0, max_iter=2000).fit)(x[train], noisy[train]) for train, _ in folds)
        p_given = np.empty(noisy.size)
        for (_, test), model in zip(folds, fitted):
            proba = model.predict_proba(x[test])
            p_given[test] = proba[np.arange(test.size), np.searchsorted(model.classes_, noisy[test])]
    return p_given


def hits_at(score: np.ndarray, k: int, tiebreak: np.ndarray) -> np.ndarray:
    """Mask of the k top-scored items, ties broken by a seeded random order."""
    top = np.zeros(score.size, dtype=bool)
    top[np.lexsort((tiebreak, -score))[:k]] = True
    return top


def measure(score: np.ndarray, flipped: np.ndarray, tiebreak: np.ndarray) -> dict[str, float]:
    k = int(flipped.sum())
    return {"AUC": roc_auc_score(flipped, score), "AP": average_precision_score(flipped, score),
            "P@k": (hits_at(score, k, tiebreak) & flipped).sum() / k,
            "R@2k": (hits_at(score, 2 * k, tiebreak) & flipped).sum() / k}


def evaluate(cat: Catalog, data: Path, kind: str, seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    """One noisy copy of the catalog: every route's metrics and wall time, and what the run fitted."""
    rng = np.random.default_rng(seed)
    noisy = flip_labels(cat.truth, cat.base, len(cat.names), kind, args.noise, rng)
    flipped = noisy != cat.truth
    noisy_path = workdir / f"{cat.name}-{kind}-{seed}.parquet"
    pq.write_table(cat.items.select(["item_id", *(f"{v}_embedding" for v in VIEWS)]).append_column(
        "label", pa.array(np.asarray(cat.names, dtype=object)[noisy], pa.string())), noisy_path)
    run = run_product(noisy_path, data / "classes.parquet", seed, workdir, cat.items.column("item_id").to_pylist(),
                      args.graph_k)
    noisy_path.unlink()
    start = time.perf_counter()
    p_given = run["p_given"] | {PEER: peer_p_given(cat.x, noisy, seed, args.jobs)}
    peer_wall = time.perf_counter() - start
    tiebreak = rng.permutation(cat.truth.size)
    # -p orders as 1 - p does, without rounding every p below 1e-16 to one tie
    results = {route: measure(-p, flipped, tiebreak) | {"wall": run["wall"] if route in RUN_ROUTES else peer_wall}
               for route, p in p_given.items()}
    return {"results": results, "k": int(flipped.sum()), "timings": run["timings"], "review": run["review"]}


def cell(values: list[float], digits: int = 3) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def report(cat: Catalog, kind: str, args: argparse.Namespace, runs: list[dict]) -> dict[str, dict[str, float]]:
    """Print one catalog and kind's table; return each route's mean metrics over seeds."""
    def collect(route: str, metric: str) -> list[float]:
        return [float(run["results"][route][metric]) for run in runs]

    routes = list(runs[0]["results"])
    print(f"\n### {cat.name}, {kind} noise: {cat.truth.size} items, {len(cat.names)} classes, {args.noise:.0%} "
          f"flipped (k = {runs[0]['k']}), seeds {' '.join(map(str, args.seeds))}\n")
    print("| route | ROC-AUC | average precision | precision@k = recall@k | recall@2k | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for route in routes:
        cells = [cell(collect(route, m)) for m in METRICS] + [cell(collect(route, "wall"), 1)]
        print(f"| {route} | " + " | ".join(cells) + " |")
    timings = [run["timings"] for run in runs]
    reviews = [run["review"] for run in runs]
    chosen = sorted({review["route"] for review in reviews})
    weights = {name: cell([review["weights"][name] for review in reviews]) for name in ("label_aware", "zero_shot")}
    print(f"\nthe three routes' wall time is the whole `pairwise run` (one per seed); its timed steps sum to "
          f"{cell([sum(t.values()) for t in timings], 1)} s (the rest: Prefect start-up and untimed writes), of which fit_review "
          f"{cell([t['fit_review_s'] for t in timings], 1)} s, pass 1 + pass 2 "
          f"{cell([t['pass1_s'] + t['pass2_s'] for t in timings], 1)} s, ranking (review_s) "
          f"{cell([t['review_s'] for t in timings], 1)} s. Route chosen: {', '.join(chosen)}; weights "
          f"label_aware {weights['label_aware']}, zero_shot {weights['zero_shot']}")
    return {route: {m: float(np.mean(collect(route, m))) for m in METRICS} for route in routes}


def wins(cat: str, kind: str, means: dict[str, dict[str, float]]) -> str:
    """One line: the best route on AUC and on precision@k, and 'both' minus each single route on both."""
    best = {m: max(means, key=lambda route: means[route][m]) for m in ("AUC", "P@k")}
    versus = []
    for single in ("zero-shot", "label-aware"):
        gain = {m: means["both"][m] - means[single][m] for m in ("AUC", "P@k")}
        verdict = "beats it on both" if min(gain.values()) > 0 else "does not beat it on both"
        versus.append(f"'both' − {single}: AUC {gain['AUC']:+.3f}, precision@k {gain['P@k']:+.3f} ({verdict})")
    return (f"- {cat}, {kind}: best AUC {best['AUC']} ({means[best['AUC']]['AUC']:.3f}), best precision@k "
            f"{best['P@k']} ({means[best['P@k']]['P@k']:.3f}); " + "; ".join(versus))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path, help="catalog directories (items.parquet, classes.parquet)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="default 0 1 2")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS), help="kinds of noise (default all)")
    parser.add_argument("--noise", type=float, default=0.10, help="share of labels flipped (default 0.10)")
    parser.add_argument("--graph-k", type=int, default=0,
                        help="the run's --graph-k (default 0: no graph); with it, 'both' is both+neighbours")
    parser.add_argument("--jobs", type=int, default=2, help="peer folds fitted in parallel (default 2, the cores here)")
    args = parser.parse_args()

    graph = f" --graph-k {args.graph_k}" if args.graph_k else ""
    print(f"The three routes come from `pairwise run --gold-column label --review both --issues-below 1{graph}` on "
          "the noisy catalog; "
          "the peer is a 5-fold out-of-fold LogisticRegression (C = 1) on the noisy labels. Every score is "
          "1 - p(given label)" + ("" if len(args.seeds) == 1 else "; cells: mean (min–max) over seeds") + ".")
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        for data in args.data:
            cat = load(data)
            for kind in args.kinds:
                runs = []
                for seed in args.seeds:
                    runs.append(evaluate(cat, data, kind, seed, args, Path(tmp)))
                    print(f"{cat.name}, {kind}, seed {seed} done", file=sys.stderr, flush=True)
                lines.append(wins(cat.name, kind, report(cat, kind, args, runs)))
    print("\n### Where each route wins (means over seeds)\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
