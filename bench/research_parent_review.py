"""Research for issue 22, "the review can rank parent-level errors": which order of annotation_issues finds a
given label whose parent is wrong (a worse error than a sibling swap) first, without losing the other errors.

    cd /work/wt/parent-review && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=$PWD DO_NOT_TRACK=1 \\
        /work/main/.venv/bin/python bench/research_parent_review.py \\
        /work/main/bench/data/taxonomy-nouns /work/main/bench/data/taxonomy-nouns-d8 --seeds 0 1 2 \\
        --kinds uniform confused --cache /tmp/parent-review

For each two-level catalog (items.parquet with gold column `label`, classes.parquet with `class_name` and
`parent`), seed and kind of noise, two disjoint seeded sets of 10% of the items each get a wrong label:

- sibling swaps: another leaf under the same parent;
- cross-parent flips: a leaf under another parent.

Kinds: 'uniform' draws that leaf uniformly among the allowed ones; 'confused' takes the allowed leaf the
base labels (cosine argmax, both views summed, on the clean catalog) most often put the true leaf's items in:
the hurried annotator's error, the hard case for both kinds.

The noisy gold column is written into a copy of items.parquet and the product runs end to end on it
(`flows.cli run --gold-column label --issues-below 1`: every labelled item is in annotation_issues, with
p_given, the posterior probability of the given leaf, and p_given_parent, the sum of that posterior over the
given leaf and its siblings). The candidate orders (most suspect first):

- leaf: p_given ascending (the order before this research);
- parent: p_given_parent ascending;
- geo a: the weighted geometric mix, p_given_parent^a * p_given^(1-a) ascending (a = 0.5: the product's
  square root, which orders as the product does);
- cost w: the expected cost of keeping the given label, (1 - p_given) + w * (1 - p_given_parent);
- tiers t: items whose p_given_parent < t first, each tier by p_given.

Measures, each with k = its number of positives (precision@k = recall@k): ROC-AUC and precision@k of
"cross": cross-parent errors against every other item (clean and sibling swaps alike: the worse error should
come first); "all": every error against the clean items; "sibling": sibling swaps against the clean items
(cross-parent errors left out). The order is chosen on the tune half of taxonomy-nouns
(``np.random.default_rng(0).random(n) < 0.5``) and confirmed on its held-out half and on the other catalog
(all of it): the best cross precision@k, in the mean over seeds and kinds, among the orders whose "all" AUC is
within 0.005 of the leaf order's (it chose geo 0.25; docs/results.md has the figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.metrics import roc_auc_score

from pairwise_core import embeddings

VIEWS = ("title", "gloss")
NOISE = 0.10
GEO = (0.1, 0.2, 0.25, 0.3, 0.5, 0.75)
TIERS = (0.1, 0.5)
COSTS = (0.5, 1.0, 2.0)
GAIN = np.array([0.0, 1.0, 2.0])  # of an item's error: none, sibling swap, cross-parent flip


def load(path: Path) -> dict:
    items = pq.read_table(path / "items.parquet")
    classes = pq.read_table(path / "classes.parquet")
    names = classes.column("class_name").to_pylist()
    parents = classes.column("parent").to_pylist()
    parent_names = list(dict.fromkeys(parents))
    parent_of = np.array([parent_names.index(p) for p in parents])
    class_id = {name: k for k, name in enumerate(names)}
    truth = np.array([class_id[label] for label in items.column("label").to_pylist()])
    base = np.zeros((len(names), len(names)))
    for view in VIEWS:
        x = embeddings(items, f"{view}_embedding")
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        c = embeddings(classes, f"{view}_embedding")
        np.add.at(base, (truth, np.argmax(x @ (c / np.linalg.norm(c, axis=1, keepdims=True)).T, axis=1)), 1)
    return {"name": path.name, "path": path, "items": items, "names": names, "parent_of": parent_of,
            "truth": truth, "confusion": base}


def inject(cat: dict, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The noisy labels and each item's error: 0 none, 1 sibling swap, 2 cross-parent flip."""
    truth, parent_of, n = cat["truth"], cat["parent_of"], cat["truth"].size
    k = len(parent_of)
    n_flip = int(round(NOISE * n))
    picked = rng.permutation(n)[:2 * n_flip]
    error = np.zeros(n, np.int8)
    error[picked[:n_flip]], error[picked[n_flip:]] = 1, 2
    noisy = truth.copy()
    confusion = cat["confusion"]
    for i in picked:
        same = parent_of == parent_of[truth[i]]
        allowed = same if error[i] == 1 else ~same
        allowed[truth[i]] = False
        if kind == "uniform":
            noisy[i] = rng.choice(np.flatnonzero(allowed))
        else:  # confused: the allowed leaf the base labels most often give the true leaf's items, ties seeded
            row = np.where(allowed, confusion[truth[i]] + rng.random(k) * 1e-3, -np.inf)
            noisy[i] = int(np.argmax(row))
    return noisy, error


def run_product(cat: dict, noisy: np.ndarray, seed: int, workdir: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """p_given and p_given_parent per item (catalog order) from one end-to-end run of the product."""
    items = cat["items"]
    path = workdir / f"{cat['name']}.parquet"
    pq.write_table(items.select(["item_id", *(f"{v}_embedding" for v in VIEWS)]).append_column(
        "label", pa.array(np.asarray(cat["names"], dtype=object)[noisy], pa.string())), path)
    db = workdir / f"{cat['name']}.duckdb"
    command = [sys.executable, "-m", "flows.cli", "run", "--items", str(path),
               "--classes", str(cat["path"] / "classes.parquet"), "--db", str(db), "--gold-column", "label",
               "--issues-below", "1", "--seed", str(seed), "--quiet"]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"DO_NOT_TRACK": "1"})
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"pairwise run failed:\n{result.stderr}")
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT item_id, p_given, p_given_parent FROM annotation_issues WHERE run_id = "
                           "(SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC LIMIT 1)"
                           ).fetchall()
    db.unlink()
    path.unlink()
    position = {item: i for i, item in enumerate(items.column("item_id").to_pylist())}
    if len(rows) != len(position):
        sys.exit(f"annotation_issues ranks {len(rows)} of {len(position)} items")
    p_given, p_parent = np.empty(len(position)), np.empty(len(position))
    for item, p, q in rows:
        p_given[position[item]], p_parent[position[item]] = p, q
    return p_given, p_parent, wall


def orders(p_given: np.ndarray, p_parent: np.ndarray) -> dict[str, np.ndarray]:
    """Each candidate's suspicion score: higher is more suspect (log probabilities, so no tie at 1 - p)."""
    tiny = 1e-300
    leaf, parent = np.log(np.maximum(p_given, tiny)), np.log(np.maximum(p_parent, tiny))
    scores = {"leaf": -leaf, "parent": -parent}
    for a in GEO:
        scores[f"geo {a:g}"] = -(a * parent + (1 - a) * leaf)
    for w in COSTS:  # the expected cost of keeping the given label: 1 a wrong leaf, 1 + w a wrong parent
        scores[f"cost {w:g}"] = (1 - p_given) + w * (1 - p_parent) - 1e-9 * leaf  # ties at 1 - p broken by p_given
    for t in TIERS:  # the parent-doubtful tier first (a shift larger than any -log p), each tier by p_given
        scores[f"tiers {t:g}"] = -leaf + 1e4 * (p_parent < t)
    return scores


def precision_at_k(score: np.ndarray, positive: np.ndarray, tiebreak: np.ndarray) -> float:
    k = int(positive.sum())
    return float(positive[np.lexsort((tiebreak, -score))[:k]].sum() / k)


def measures(score: np.ndarray, error: np.ndarray, tiebreak: np.ndarray) -> dict[str, float]:
    out = {}
    cross = error == 2
    for name, positive, among in (("cross", cross, np.ones_like(cross)), ("all", error > 0, np.ones_like(cross)),
                                  ("sibling", error == 1, error < 2)):
        out[f"{name} AUC"] = float(roc_auc_score(positive[among], score[among]))
        out[f"{name} P@k"] = precision_at_k(score[among], positive[among], tiebreak[among])
    gain = GAIN[error]
    order, ideal = gain[np.lexsort((tiebreak, -score))], np.sort(gain)[::-1]
    k = int((error > 0).sum())
    out["gain@k"] = float(order[:k].sum() / ideal[:k].sum())
    discount = 1 / np.log2(np.arange(2, gain.size + 2))
    out["NDCG"] = float((order * discount).sum() / (ideal * discount).sum())
    return out


def table(title: str, results: dict[str, dict[str, float]]) -> str:
    columns = list(next(iter(results.values())))
    lines = [f"\n{title}", "| order | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for order, values in results.items():
        lines.append(f"| {order} | " + " | ".join(f"{values[c]:.3f}" for c in columns) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("catalogs", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--kinds", nargs="+", default=["uniform", "confused"])
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--cached-only", action="store_true", help="skip the runs --cache does not hold")
    parser.add_argument("--cache", type=Path, help="keep each run's p_given, p_given_parent and errors here (.npz), "
                        "and read them back instead of running the product again")
    args = parser.parse_args()
    everything = {}
    with tempfile.TemporaryDirectory(prefix="parent-review-") as tmp:
        for path in args.catalogs:
            cat = load(path)
            n = cat["truth"].size
            tune = np.random.default_rng(0).random(n) < 0.5
            for kind in args.kinds:
                for seed in args.seeds:
                    rng = np.random.default_rng(seed)
                    noisy, error = inject(cat, kind, rng)
                    cached = args.cache and args.cache / f"{cat['name']}-{kind}-{seed}.npz"
                    if cached and cached.exists():
                        saved = np.load(cached)
                        assert (saved["error"] == error).all(), "the cache was written with other noise"
                        p_given, p_parent, wall = saved["p_given"], saved["p_given_parent"], float(saved["wall"])
                    elif args.cached_only:
                        continue
                    else:
                        p_given, p_parent, wall = run_product(cat, noisy, seed, Path(tmp))
                        if cached:
                            args.cache.mkdir(parents=True, exist_ok=True)
                            np.savez(cached, p_given=p_given, p_given_parent=p_parent, error=error, wall=wall)
                    tiebreak = rng.permutation(n)
                    scores = orders(p_given, p_parent)
                    print(f"\n## {cat['name']}, {kind}, seed {seed}: {n} items, {(error == 1).sum()} sibling swaps, "
                          f"{(error == 2).sum()} cross-parent flips; run {wall:.0f} s; median p_given_parent of "
                          f"sibling swaps {np.median(p_parent[error == 1]):.3f}, "
                          f"cross {np.median(p_parent[error == 2]):.3f}, "
                          f"clean {np.median(p_parent[error == 0]):.3f}", flush=True)
                    for half, mask in (("tune", tune), ("held-out", ~tune), ("all", np.ones(n, bool))):
                        results = {order: measures(s[mask], error[mask], tiebreak[mask]) for order, s in scores.items()}
                        everything[f"{cat['name']}/{kind}/{seed}/{half}"] = results
                        print(table(f"{cat['name']}, {kind}, seed {seed}, {half} half ({mask.sum()} items)", results),
                              flush=True)
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))
    summarize(everything, args.catalogs[0].name)


def mean_of(everything: dict, prefix: str, half: str) -> dict[str, dict[str, float]]:
    """Each order's measures averaged over the seeds of ``prefix`` (catalog/kind) on ``half``."""
    runs = [results for key, results in everything.items() if key.startswith(prefix + "/") and key.endswith("/" + half)]
    return {order: {m: float(np.mean([r[order][m] for r in runs])) for m in runs[0][order]} for order in runs[0]}


def summarize(everything: dict, tuned_on: str) -> None:
    """Means over seeds per catalog, kind and half; the order chosen on the first catalog's tune half (means
    over seeds and kinds): the best cross P@k among the orders whose 'all' AUC is within 0.005 of the leaf's."""
    groups = sorted({key.rsplit("/", 2)[0] for key in everything})
    for group in groups:
        for half in ("tune", "held-out", "all"):
            n = sum(key.startswith(group + "/") and key.endswith("/" + half) for key in everything)
            print(table(f"mean of {n} seeds: {group}, {half}", mean_of(everything, group, half)))
    tune = [mean_of(everything, group, "tune") for group in groups if group.startswith(tuned_on + "/")]
    pooled = {order: {m: float(np.mean([t[order][m] for t in tune])) for m in tune[0][order]} for order in tune[0]}
    print(table(f"{tuned_on}, tune half, mean over seeds and kinds", pooled))
    eligible = [o for o in pooled if pooled[o]["all AUC"] >= pooled["leaf"]["all AUC"] - 0.005]
    chosen = max(eligible, key=lambda o: pooled[o]["cross P@k"])
    print(f"\nchosen on the tune half: {chosen} (eligible: {', '.join(eligible)})")


if __name__ == "__main__":
    main()
