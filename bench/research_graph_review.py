"""Research (issue 23, part 3): does the kNN graph help the review find label errors?

    PYTHONPATH=$PWD DO_NOT_TRACK=1 .venv/bin/python bench/research_graph_review.py DATA [DATA ...] \
        [--seeds 0 1 2] [--kinds uniform confused class-conditional] [--noise 0.10]

The set-up of bench/evaluate_review.py (the same noisy catalogs, the same peer, the same metrics), with the
product run given ``--graph-k 20`` too. The run is in this process, so that what the graph step computed is
kept: each item's neighbours and edge weights (``tasks.graph.neighbours``) and its propagated, sharpened joint
posterior (``tasks.graph._stage``). Routes scored, each as 1 - p(given label), against the flips:

- the product's routes: zero-shot and label-aware (which the graph leaves as they are), 'both' as the pass
  computed it (before the graph's vote: the route's log posterior at the given label, kept from
  ``tasks.label.review_table``), 'both+neighbours (the product)' (annotation_issues.p_given), and the peer;
- ``zero-shot graph``: the propagated joint posterior at the given label (the issue's first proposal);
- ``vote``: SimiFeat-style, reimplemented: the given labels of the item's neighbours, weighted by the graph's
  symmetric edge weights W = A + Aᵀ, with a pseudo-count of ``EPS`` per class,
  v_i(c) = (Σ_j W_ij [y_j = c] + EPS) / (Σ_j W_ij + K EPS);
- products of experts: ``both × vote^b``, log_softmax(route + b log v) at the given label (b in BETAS; what the
  product computes, at b = VOTE_POWER), the same sum unnormalized (a ranking only), and ``label-aware ×
  zero-shot graph`` with the run's own weights for 'both' (unnormalized).

Seeds' means (min-max) per catalog and kind; then which scores beat the product's 'both' on AUC and on
precision@k for every catalog and kind.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from evaluate_review import VIEWS, load, measure, peer_p_given  # noqa: E402
from pairwise_core.graph import vote_shares, with_votes  # noqa: E402
from review_noise import KINDS, flip_labels  # noqa: E402

K_GRAPH = 20
EPS = 0.1
BETAS = (0.25, 0.5, 1.0, 2.0)
HALVES_SEED = 20261205  # the tune and held-out halves of each catalog's items
METRICS = ("AUC", "P@k")


def product_run(items: Path, classes: Path, seed: int, workdir: Path) -> dict:
    """``pairwise run --review both --graph-k 20`` in this process; each route's p(given) by item_id and what
    the graph step computed."""
    import tasks.graph as product_graph
    import tasks.label as product_label
    from flows import cli
    from tasks.sample import item_hash

    captured: dict = {"route": {}}
    neighbours, load, stage = product_graph.neighbours, product_graph._load, product_graph._stage
    review_table = product_label.review_table

    def keep_route(judged, route_name, keep_below, ids, *args, **kwargs):
        """The pass's route log posterior of each judged row (before the graph's vote), by item_id."""
        for item_id, values in zip(ids.take(pa.array(judged.rows)).to_pylist(), judged.route, strict=True):
            captured["route"][item_id] = values
        return review_table(judged, route_name, keep_below, ids, *args, **kwargs)

    def keep_neighbours(points: np.ndarray, k: int, seed: int):
        out = neighbours(points, k, seed)
        captured["found"], captured["cosines"] = out[0], out[1]
        return out

    def keep_load(paths: list[str], name: str) -> np.ndarray:
        if name == "gold":
            captured["gold"], captured["keys"] = load(paths, "gold"), load(paths, "keys")
        return load(paths, name)

    def keep_stage(results: dict, sizes: list[int], staging, *votes):
        captured["joint"] = results["joint"].copy()
        return stage(results, sizes, staging, *votes)

    product_graph.neighbours, product_graph._load, product_graph._stage = keep_neighbours, keep_load, keep_stage
    product_label.review_table = keep_route
    db = workdir / f"run-{seed}.duckdb"
    try:
        code = cli.main(["run", "--items", str(items), "--classes", str(classes), "--db", str(db),
                         "--gold-column", "label", "--review", "both", "--issues-below", "1", "--graph-k",
                         str(K_GRAPH), "--seed", str(seed), "--quiet"])
    finally:
        product_graph.neighbours, product_graph._load, product_graph._stage = neighbours, load, stage
        product_label.review_table = review_table
    if code != 0:
        sys.exit(f"pairwise run failed with exit code {code}")
    with duckdb.connect(str(db), read_only=True) as con:
        run_id, details = con.execute("SELECT run_id, details FROM runs WHERE status = 'succeeded'").fetchone()
        issues = con.sql("SELECT item_id, p_given, zero_shot_p_given, label_aware_p_given FROM annotation_issues"
                         " WHERE run_id = ?", params=[run_id]).to_arrow_table()
    captured["issues"] = issues
    captured["weights"] = json.loads(details)["review"]["weights"]
    captured["hash"] = lambda ids: item_hash(pa.array(ids, pa.string()), seed)
    return captured


def vote_counts(found: np.ndarray, cosines: np.ndarray, given: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, K): the weight of each item's neighbours per given label, over the product's graph (W = A + Aᵀ,
    max(cos, 0) edges)."""
    from pairwise_core.graph import adjacency, edge_weights, label_votes, undirected
    from tasks.graph import POWER

    w = undirected(adjacency(found, edge_weights(cosines, POWER), len(found)))
    return label_votes(w, given, n_classes).toarray()


def evaluate(cat, data: Path, kind: str, seed: int, noise: float, workdir: Path) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    noisy = flip_labels(cat.truth, cat.base, len(cat.names), kind, noise, rng)
    flipped = noisy != cat.truth
    folder = workdir / f"{cat.name}-{kind}-{seed}"
    folder.mkdir()
    items = cat.items.select(["item_id", *(f"{v}_embedding" for v in VIEWS)]).append_column(
        "label", pa.array(np.asarray(cat.names, dtype=object)[noisy], pa.string()))
    pq.write_table(items, folder / "items.parquet")
    run = product_run(folder / "items.parquet", data / "classes.parquet", seed, folder)
    ids = cat.items.column("item_id").to_pylist()
    # the graph step's rows (partition order) -> the catalog's rows, by the seeded key of each id
    row_of_key = {int(key): row for row, key in enumerate(run["keys"])}
    rows = np.array([row_of_key[int(key)] for key in run["hash"](ids)])
    if len(run["found"]) != len(ids):
        sys.exit("some items were not placed in the graph: this research assumes every item has a view")
    given = run["gold"][rows]
    if not np.array_equal(given, noisy):
        sys.exit("the graph step's given labels are not the noisy labels")
    # neighbours are positions among the graph's rows: take every array in the graph's row order
    at = np.empty(len(ids), np.int64)
    at[rows] = np.arange(len(ids))  # catalog row of each graph row
    given_g, flipped_g = noisy[at], flipped[at]
    counts = vote_counts(run["found"], run["cosines"], given_g, len(cat.names))
    votes = vote_shares(counts, EPS)
    p_vote = votes[np.arange(len(ids)), given_g]
    p_graph = run["joint"][np.arange(len(ids)), given_g].astype(np.float64)

    issues = run["issues"]
    position = {item_id: i for i, item_id in enumerate(ids)}
    issue_rows = np.array([position[i] for i in issues.column("item_id").to_pylist()])
    product = {}
    for route, column in (("zero-shot", "zero_shot_p_given"), ("label-aware", "label_aware_p_given"),
                          ("both+neighbours (the product)", "p_given")):
        values = np.empty(len(ids))
        values[issue_rows] = issues.column(column).to_numpy(zero_copy_only=False)
        product[route] = values[at]
    peer = peer_p_given(cat.x, noisy, seed, 2)[at]
    route = np.stack([run["route"][ids[row]] for row in at]).astype(np.float64)  # graph row order
    product["both"] = np.exp(route[np.arange(len(ids)), given_g])  # the pass's p_given, before the vote

    tiny = 1e-300
    log = {name: np.log(np.maximum(p, tiny)) for name, p in
           {**product, "peer": peer, "zero-shot graph": p_graph, "vote": p_vote}.items()}
    scores = {name: value for name, value in log.items()}
    weights = run["weights"]
    scores["label-aware × zero-shot graph (run's weights)"] = (weights["label_aware"] * log["label-aware"]
                                                               + weights["zero_shot"] * log["zero-shot graph"])
    for beta in BETAS:
        scores[f"both × vote^{beta}, unnormalized"] = log["both"] + beta * log["vote"]
        combined = with_votes(route, counts, power=beta, pseudo_count=EPS)
        scores[f"both × vote^{beta}"] = combined[np.arange(len(ids)), given_g]
    tiebreak = rng.permutation(len(ids))
    half = np.random.default_rng(HALVES_SEED).permutation(len(ids)) < len(ids) // 2  # by catalog row
    half_g = half[at]
    out = {"all": {name: measure(-value, flipped_g, tiebreak) for name, value in scores.items()}}
    for name, rows_of in (("tune", half_g), ("held-out", ~half_g)):
        out[name] = {score: measure(-value[rows_of], flipped_g[rows_of], tiebreak[rows_of])
                     for score, value in scores.items()}
    return out


def table(runs: list[dict], part: str) -> dict[str, dict[str, float]]:
    print("| score | ROC-AUC | precision@k |\n|---|---|---|")
    means = {}
    for name in runs[0][part]:
        cells = []
        for metric in METRICS:
            values = [run[part][name][metric] for run in runs]
            cells.append(f"{np.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})")
        means[name] = {m: float(np.mean([run[part][name][m] for run in runs])) for m in METRICS}
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--noise", type=float, default=0.10)
    args = parser.parse_args()
    summary: dict[str, dict[tuple[str, str], dict[str, dict[str, float]]]] = {"all": {}, "tune": {}, "held-out": {}}
    with tempfile.TemporaryDirectory(prefix="graph-review-") as tmp:
        for data in args.data:
            cat = load(data)
            for kind in args.kinds:
                runs = [evaluate(cat, data, kind, seed, args.noise, Path(tmp)) for seed in args.seeds]
                for part in summary:
                    print(f"\n### {cat.name}, {kind} noise, {args.noise:.0%} flipped, seeds "
                          f"{' '.join(map(str, args.seeds))}: {part} items\n")
                    summary[part][(cat.name, kind)] = table(runs, part)
                sys.stdout.flush()
    for part, results in summary.items():
        print(f"\n{part} items: against the product's 'both', mean AUC / precision@k differences per catalog and "
              "kind ('every' = better on both metrics for every one):")
        for name in next(iter(results.values())):
            if name == "both":
                continue
            diffs = [(means[name]["AUC"] - means["both"]["AUC"], means[name]["P@k"] - means["both"]["P@k"])
                     for means in results.values()]
            every = all(a > 0 and p > 0 for a, p in diffs)
            mean = np.mean(diffs, axis=0)
            cells = ", ".join(f"{a:+.3f}/{p:+.3f}" for a, p in diffs)
            print(f"- {name}: {cells}; mean {mean[0]:+.4f}/{mean[1]:+.4f}{' (every)' if every else ''}")
    print("catalogs and kinds in order: " + ", ".join(f"{c} {k}" for c, k in summary["all"]))


if __name__ == "__main__":
    main()
