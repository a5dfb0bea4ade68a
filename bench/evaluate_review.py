"""How well annotation_issues finds known label errors, against a supervised route, on the real catalog.

    .venv/bin/python bench/evaluate_review.py [--data bench/data/real] [--noise 0.10] \
        [--seed 0 | --seeds 0 1 2] [--c 1.0 | --search-c] [--jobs 2]

Needs the `supervised` extra (scikit-learn). For each seed, a seeded `--noise`
share of the items get their label flipped to another class chosen uniformly;
the truth stays in memory and the noisy catalog is written as Parquet. Then:

- zero-shot: the product itself, `pairwise run --gold-column label` on the noisy
  catalog (a subprocess, timed whole); the ranking is annotation_issues.rank,
  and the items the table leaves out (no evidence against their label) tie last;
- supervised (confident learning, as cleanlab ranks by default): out-of-fold
  probabilities of a LogisticRegression trained on the noisy labels (5-fold
  StratifiedKFold) on the L2-normalised [title, gloss] embeddings (and on each
  view alone); score = 1 - p(given label) ("self-confidence"). C is fixed
  (default 1.0) or, with --search-c, chosen per outer fold by a 3-fold search
  on its training part by log-loss on the noisy labels. The truth is never used;
- combinations, untuned: the mean of the two scores' rank percentiles, and
  Fisher's method on rank p-values (-log p_zero_shot - log p_supervised, with
  p = share of items scoring at least as high).

Reported per route: ROC-AUC at finding the flipped items, average precision,
precision at k = number of flips (which equals recall at that k), recall at
2k, wall time. Then where each route wins: AUC and recall@k within the items
whose true class the zero-shot classifier gets (its pairwise label in some
view is the true class) and within the others, and the per-class AUC count.
With several seeds every cell is "mean (min-max)".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from joblib import Parallel, delayed
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from pairwise_core import embeddings

VIEWS = ("title", "gloss")
FEATURES = {"title + gloss": VIEWS, "title": ("title",), "gloss": ("gloss",)}
SEARCH_CS = (0.1, 0.3, 1.0, 3.0, 10.0)
ZERO_SHOT = "zero-shot (annotation_issues)"
SUPERVISED = "supervised, title + gloss"  # the main supervised figure, and the one combined
MEAN_RANK = "mean rank percentile (zero-shot, supervised)"
FISHER = "Fisher on rank p-values (zero-shot, supervised)"


def flip_labels(labels: np.ndarray, n_classes: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A copy of labels with round(fraction * n) seeded items moved to another class, uniformly."""
    noisy = labels.copy()
    flipped = rng.choice(labels.size, size=round(fraction * labels.size), replace=False)
    noisy[flipped] = (labels[flipped] + rng.integers(1, n_classes, size=flipped.size)) % n_classes
    return noisy


def zero_shot(items: pa.Table, classes: Path, seed: int, workdir: Path) -> dict:
    """Run `pairwise run` on the noisy catalog; annotation_issues scores and pairwise labels, aligned to items."""
    db = workdir / f"review-{seed}.duckdb"
    command = [str(Path(sys.executable).with_name("pairwise")), "run", "--items", str(workdir / "noisy.parquet"),
               "--classes", str(classes), "--gold-column", "label", "--db", str(db), "--seed", str(seed)]
    start = time.perf_counter()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"pairwise run failed:\n{result.stderr}")
    ids = items.column("item_id").to_pylist()
    position = {item_id: i for i, item_id in enumerate(ids)}
    with duckdb.connect(str(db), read_only=True) as con:
        run_id, details = con.execute(
            "SELECT run_id, details FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1"
        ).fetchone()
        issues = con.execute("SELECT item_id, rank FROM annotation_issues WHERE run_id = ?", [run_id]).fetchall()
        labels = con.execute(
            "SELECT item_id, modality, pairwise_class FROM item_labels WHERE run_id = ?", [run_id]
        ).fetchall()
    # the table's order is the ranking; items it leaves out (no evidence against their label) tie last
    score = np.full(len(ids), -float(len(ids) + 1))
    for item_id, rank in issues:
        score[position[item_id]] = -rank
    pairwise = {view: np.full(len(ids), "", dtype=object) for view in VIEWS}
    for item_id, modality, label in labels:
        pairwise[modality][position[item_id]] = label
    timings = json.loads(details)["timings"]
    return {"score": score, "pairwise": pairwise, "wall": wall, "inside": timings["pass1_s"] + timings["fit_s"] + timings["pass2_s"]}


def self_confidence(x: np.ndarray, noisy: np.ndarray, seed: int, c: float | None,
                    jobs: int) -> tuple[np.ndarray, list[float]]:
    """1 - out-of-fold p(given label) from a LogisticRegression on the noisy labels; the Cs used per fold.

    Folds run in `jobs` processes with one BLAS thread each: OpenBLAS's own
    threads made one fit 3 to 4 times slower on this 2-core machine.
    """
    folds = list(StratifiedKFold(5, shuffle=True, random_state=seed).split(x, noisy))
    with threadpool_limits(1):
        fitted = Parallel(n_jobs=jobs)(delayed(_fit_fold)(x[train], noisy[train], c, seed) for train, _ in folds)
        p_given = np.empty(noisy.size)
        for (_, test), model in zip(folds, fitted):
            proba = model.predict_proba(x[test])
            p_given[test] = proba[np.arange(test.size), np.searchsorted(model.classes_, noisy[test])]
    chosen = [float(np.ravel(model.C_)[0]) if c is None else c for model in fitted]
    return 1.0 - p_given, chosen


def _fit_fold(x: np.ndarray, labels: np.ndarray, c: float | None, seed: int):
    if c is None:  # inner search on this training part only, by log-loss on its (noisy) labels
        inner = StratifiedKFold(3, shuffle=True, random_state=seed)
        with warnings.catch_warnings():  # scikit-learn 1.9 announces changes of defaults we do not rely on
            warnings.simplefilter("ignore", FutureWarning)
            return LogisticRegressionCV(Cs=list(SEARCH_CS), cv=inner, scoring="neg_log_loss",
                                        max_iter=2000).fit(x, labels)
    return LogisticRegression(C=c, max_iter=2000).fit(x, labels)


def rank_percentile(score: np.ndarray) -> np.ndarray:
    return rankdata(score, method="average") / score.size


def rank_p_value(score: np.ndarray) -> np.ndarray:
    """Share of items scoring at least as high (1 for the lowest score)."""
    return rankdata(-score, method="max") / score.size


def hits_at(score: np.ndarray, k: int, tiebreak: np.ndarray) -> np.ndarray:
    """Mask of the k top-scored items, ties broken by a seeded random order."""
    top = np.zeros(score.size, dtype=bool)
    top[np.lexsort((tiebreak, -score))[:k]] = True
    return top


def evaluate_seed(args: argparse.Namespace, seed: int, items: pa.Table, x: dict, truth: np.ndarray,
                  names: list[str], workdir: Path) -> dict:
    rng = np.random.default_rng(seed)
    noisy = flip_labels(truth, len(names), args.noise, rng)
    flipped = noisy != truth
    noisy_table = items.select(["item_id", *(f"{v}_embedding" for v in VIEWS)]).append_column(
        "label", pa.array(np.asarray(names, dtype=object)[noisy], pa.string()))
    pq.write_table(noisy_table, workdir / "noisy.parquet")

    zs = zero_shot(items, args.data / "classes.parquet", seed, workdir)
    scores, walls = {ZERO_SHOT: zs["score"]}, {ZERO_SHOT: zs["wall"]}
    cs = {}
    for name, views in FEATURES.items():
        start = time.perf_counter()
        features = np.hstack([x[v] for v in views])
        scores[f"supervised, {name}"], cs[name] = self_confidence(
            features, noisy, seed, None if args.search_c else args.c, args.jobs)
        walls[f"supervised, {name}"] = time.perf_counter() - start
    zero, supervised = scores[ZERO_SHOT], scores[SUPERVISED]
    scores[MEAN_RANK] = (rank_percentile(zero) + rank_percentile(supervised)) / 2
    scores[FISHER] = -np.log(rank_p_value(zero)) - np.log(rank_p_value(supervised))
    walls[MEAN_RANK] = walls[FISHER] = walls[ZERO_SHOT] + walls[SUPERVISED]

    k = int(flipped.sum())
    tiebreak = rng.permutation(truth.size)
    pairwise_right = np.zeros(truth.size, dtype=bool)
    for view in VIEWS:
        pairwise_right |= zs["pairwise"][view] == np.asarray(names, dtype=object)[truth]
    results = {}
    for route, score in scores.items():
        top = hits_at(score, k, tiebreak)
        top2 = hits_at(score, 2 * k, tiebreak)
        row = {
            "AUC": roc_auc_score(flipped, score),
            "AP": average_precision_score(flipped, score),
            "P@k = R@k": (top & flipped).sum() / k,
            "R@2k": (top2 & flipped).sum() / k,
            "wall s": walls[route],
        }
        for group, members in (("known", pairwise_right), ("unknown", ~pairwise_right)):
            row[f"AUC {group}"] = roc_auc_score(flipped[members], score[members])
            row[f"R@k {group}"] = (top & flipped & members).sum() / (flipped & members).sum()
        row["class AUC"] = np.array([roc_auc_score(flipped[truth == c], score[truth == c])
                                     for c in range(len(names))])
        results[route] = row
    return {"results": results, "k": k, "known share": pairwise_right.mean(),
            "known share of flips": pairwise_right[flipped].mean(), "zero-shot inside": zs["inside"], "C": cs}


def cell(values: list[float], digits: int = 3) -> str:
    mean = float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/data/real"))
    parser.add_argument("--noise", type=float, default=0.10, help="share of labels flipped (default 0.10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, nargs="+", help="several seeds; cells become mean (min–max)")
    parser.add_argument("--c", type=float, default=1.0, help="LogisticRegression C (default 1.0)")
    parser.add_argument("--search-c", action="store_true",
                        help=f"choose C in {SEARCH_CS} per outer fold, by inner 3-fold log-loss on the noisy labels")
    parser.add_argument("--jobs", type=int, default=2, help="folds fitted in parallel (default 2, the cores here)")
    args = parser.parse_args()
    seeds = args.seeds or [args.seed]

    items = pq.read_table(args.data / "items.parquet")
    names = pq.read_table(args.data / "classes.parquet").column("class_name").to_pylist()
    class_id = {name: k for k, name in enumerate(names)}
    truth = np.array([class_id[label] for label in items.column("label").to_pylist()])
    x = {}
    for view in VIEWS:
        matrix = embeddings(items, f"{view}_embedding")  # float32: fits faster, figures within 0.001 of float64
        x[view] = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            runs.append(evaluate_seed(args, seed, items, x, truth, names, Path(tmp)))
            print(f"seed {seed} done; C per fold: {runs[-1]['C']}", file=sys.stderr, flush=True)

    routes = list(runs[0]["results"])

    def collect(route: str, metric: str) -> list[float]:
        return [run["results"][route][metric] for run in runs]

    print(f"{truth.size} items, {len(names)} classes, {args.noise:.0%} of labels flipped "
          f"(k = {runs[0]['k']} flips), seeds {' '.join(map(str, seeds))}"
          + ("" if len(seeds) == 1 else "; cells: mean (min–max) over seeds"))
    c_text = "C searched per fold" if args.search_c else f"C = {args.c}"
    print(f"supervised: 5-fold out-of-fold LogisticRegression ({c_text}) on the noisy labels, score 1 - p(given)\n")
    metrics = ("AUC", "AP", "P@k = R@k", "R@2k")
    print("| route | ROC-AUC | average precision | precision@k = recall@k | recall@2k | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for route in routes:
        cells = [cell(collect(route, m)) for m in metrics] + [cell(collect(route, "wall s"), 1)]
        print(f"| {route} | " + " | ".join(cells) + " |")
    inside = [run["zero-shot inside"] for run in runs]
    print(f"\nzero-shot wall time is the whole `pairwise run` process (Prefect start-up included); inside the flow, "
          f"pass 1 + pass 2 took {cell(inside, 1)} s. Combinations cost both routes.")

    known = [run["known share"] for run in runs]
    known_flips = [run["known share of flips"] for run in runs]
    print(f"\nWhere each route wins. 'known': items whose true class the zero-shot classifier gets in some view "
          f"({cell(known, 2)} of items, {cell(known_flips, 2)} of flips); 'unknown': the others.\n")
    print("| route | AUC, known | AUC, unknown | recall@k of known flips | recall@k of unknown flips |")
    print("|---|---|---|---|---|")
    for route in routes:
        cells = [cell(collect(route, m)) for m in ("AUC known", "AUC unknown", "R@k known", "R@k unknown")]
        print(f"| {route} | " + " | ".join(cells) + " |")

    class_auc = {route: np.mean([run["results"][route]["class AUC"] for run in runs], axis=0) for route in routes}
    wins = [names[c] for c in range(len(names)) if class_auc[ZERO_SHOT][c] > class_auc[SUPERVISED][c]]
    print(f"\nPer true class (AUC averaged over seeds), zero-shot beats supervised title + gloss in {len(wins)} of "
          f"{len(names)} classes" + (f": {', '.join(wins)}" if wins else ""))
    for route in (MEAN_RANK, FISHER):
        beats = sum(class_auc[route][c] > max(class_auc[ZERO_SHOT][c], class_auc[SUPERVISED][c])
                    for c in range(len(names)))
        print(f"{route} beats both in {beats} of {len(names)} classes")
    if len(seeds) > 1:
        for route in (MEAN_RANK, FISHER):
            always = all(run["results"][route][m] > max(run["results"][ZERO_SHOT][m], run["results"][SUPERVISED][m])
                         for run in runs for m in metrics)
            print(f"{route} beats both routes on every seed and every ranking metric: {'yes' if always else 'no'}")


if __name__ == "__main__":
    main()
