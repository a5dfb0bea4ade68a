"""The drift tests of pairwise_core.drift on real catalogs, against MMD with a permutation p-value (issue 21).

    PYTHONPATH=. .venv/bin/python bench/evaluate_drift.py bench/data/real bench/data/real-verbs [--seeds 0 1 2 3 4]

Each catalog folder is one built by bench/build_real_catalog.py (same model, so the same width); the
"other catalog" of each is the next one given. Per catalog, view and seed, the catalog is split into
two seeded halves: the reference (the model's fit sample) is one half, and the current sample (the
night) is:

- ``same half``: the other half; must not drift;
- ``same, 200``: 200 rows of the other half (a small night); must not drift;
- ``1 class x3``: the other half, subsampled so one seeded class has three times its share; should drift;
- ``1/4 classes out``: the other half without a seeded quarter of the classes; must drift;
- ``1% other``, ``5% other``: the other half with 1% or 5% of its rows swapped for the other catalog's; mild;
- ``other catalog``: a half of the other catalog; must drift.

Per cell: the domain classifier's out-of-fold ROC-AUC (``embedding_drift``), MMD, and the class-share
Jensen-Shannon distance of the gold labels (``class_share_shift``; "-" where the current rows are not
all of this catalog). The table gives the mean value and how many seeds flagged drift, and the mean
seconds per test.

MMD is the comparator, not product code: alibi-detect 0.13.0, its well-kept implementation, requires
numpy<2, transformers<5 and numba<0.60, which this project's pins exclude. So ``mmd_test`` below is a
small reference implementation of the same test as alibi-detect's ``MMDDrift``: the biased squared MMD
with a Gaussian RBF kernel whose bandwidth is the median pairwise distance, and a p-value from
``--permutations`` seeded permutations of the pooled rows; drift when p < 0.05 (alibi-detect's default).
The kernel matrix is (2 x rows)^2, so it runs on ``--mmd-rows`` rows a side.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pairwise_core.drift import SAMPLE_ROWS, class_share_shift, embedding_drift

MMD_P_VALUE = 0.05
SMALL_NIGHT = 200
SCENARIOS = ("same half", f"same, {SMALL_NIGHT}", "1 class x3", "1/4 classes out", "1% other", "5% other",
             "other catalog")
EXPECTED = {"same half": "no", f"same, {SMALL_NIGHT}": "no", "1 class x3": "yes", "1/4 classes out": "yes",
            "1% other": "mild", "5% other": "mild", "other catalog": "yes"}


@dataclass(frozen=True)
class Catalog:
    name: str
    views: dict[str, np.ndarray]
    labels: np.ndarray
    n_classes: int


def load(folder: Path) -> Catalog:
    table = pq.read_table(folder / "items.parquet")
    views = {c.removesuffix("_embedding"): np.stack(table.column(c).to_numpy(zero_copy_only=False)).astype(np.float32)
             for c in table.column_names if c.endswith("_embedding")}
    names, labels = np.unique(table.column("label").to_numpy(zero_copy_only=False), return_inverse=True)
    return Catalog(folder.name, views, labels.astype(np.int64), len(names))


def mmd_test(x: np.ndarray, y: np.ndarray, *, seed: int, permutations: int) -> float:
    """Permutation p-value of the biased squared MMD between rows x and y, RBF kernel, median bandwidth."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    square = np.einsum("ij,ij->i", pooled, pooled)
    dist2 = np.maximum(square[:, None] + square[None, :] - 2 * pooled @ pooled.T, 0.0)
    sigma2 = np.median(dist2[np.triu_indices(len(pooled), k=1)])
    kernel = np.exp(-dist2 / (2 * sigma2))
    rng = np.random.default_rng(seed)
    sides = np.zeros((len(pooled), permutations + 1))
    sides[: len(x), 0] = 1
    for b in range(1, permutations + 1):
        sides[rng.permutation(len(pooled))[: len(x)], b] = 1
    kx = kernel @ sides  # per column: each row's kernel sum over that column's x side
    in_x = np.einsum("ib,ib->b", sides, kx)
    total = kernel.sum()
    cross = kx.sum(axis=0) - in_x
    in_y = total - in_x - 2 * cross
    n, m = len(x), len(y)
    mmd2 = in_x / n**2 + in_y / m**2 - 2 * cross / (n * m)
    return float((1 + np.sum(mmd2[1:] >= mmd2[0])) / (1 + permutations))


def current_rows(scenario: str, catalog: Catalog, other: Catalog, view: str, pool: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """The current sample's rows and, where they are all of this catalog, their labels."""
    x, y = catalog.views[view], catalog.labels
    if scenario == "same half":
        idx = pool
    elif scenario == f"same, {SMALL_NIGHT}":
        idx = rng.choice(pool, SMALL_NIGHT, replace=False)
    elif scenario == "1 class x3":
        boosted = rng.integers(catalog.n_classes)
        inside, outside = pool[y[pool] == boosted], pool[y[pool] != boosted]
        share = len(inside) / len(pool)
        keep = round(len(inside) * (1 - 3 * share) / (3 * share))
        idx = np.concatenate([inside, rng.choice(outside, keep, replace=False)])
    elif scenario == "1/4 classes out":
        out = rng.choice(catalog.n_classes, catalog.n_classes // 4, replace=False)
        idx = pool[~np.isin(y[pool], out)]
    elif scenario in ("1% other", "5% other"):
        swapped = round(len(pool) * (0.01 if scenario == "1% other" else 0.05))
        foreign = other.views[view][rng.choice(len(other.labels), swapped, replace=False)]
        return np.concatenate([x[pool[swapped:]], foreign]), None
    else:
        return other.views[view][rng.permutation(len(other.labels))[: len(other.labels) // 2]], None
    return x[idx], y[idx]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--sample-rows", type=int, default=SAMPLE_ROWS)
    parser.add_argument("--mmd-rows", type=int, default=1000)
    parser.add_argument("--permutations", type=int, default=200)
    parser.add_argument("--no-mmd", action="store_true")
    args = parser.parse_args()
    catalogs = [load(folder) for folder in args.data]
    cells: dict[tuple[str, str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for i, catalog in enumerate(catalogs):
        other = catalogs[(i + 1) % len(catalogs)]
        for view in catalog.views:
            for seed in args.seeds:
                rng = np.random.default_rng(seed)
                order = rng.permutation(len(catalog.labels))
                ref_idx, pool = order[: len(order) // 2], order[len(order) // 2 :]
                reference = catalog.views[view][ref_idx]
                for scenario in SCENARIOS:
                    current, labels = current_rows(scenario, catalog, other, view, pool, rng)
                    cell = cells[(catalog.name, view, scenario)]
                    start = time.perf_counter()
                    auc = embedding_drift(reference, current, seed=seed, sample_rows=args.sample_rows)
                    cell["auc_s"].append(time.perf_counter() - start)
                    cell["auc"].append(auc.value)
                    cell["auc_drift"].append(auc.drifted)
                    cell["auc_threshold"].append(auc.threshold)
                    if not args.no_mmd:
                        sub = np.random.default_rng(seed)
                        x = reference[sub.choice(len(reference), min(args.mmd_rows, len(reference)), replace=False)]
                        y = current[sub.choice(len(current), min(args.mmd_rows, len(current)), replace=False)]
                        start = time.perf_counter()
                        p = mmd_test(x, y, seed=seed, permutations=args.permutations)
                        cell["mmd_s"].append(time.perf_counter() - start)
                        cell["mmd_p"].append(p)
                        cell["mmd_drift"].append(p < MMD_P_VALUE)
                    if labels is not None:
                        js = class_share_shift(catalog.labels[ref_idx], labels, catalog.n_classes, seed=seed)
                        cell["js"].append(js.value)
                        cell["js_drift"].append(js.drifted)
                        cell["js_threshold"].append(js.threshold)
    n = len(args.seeds)
    print(f"seeds {args.seeds}; domain classifier on <= {args.sample_rows} rows a side; "
          f"MMD on <= {args.mmd_rows} rows a side, {args.permutations} permutations, p < {MMD_P_VALUE}")
    print("| catalog | view | current sample | drift expected | AUC (threshold) | AUC drifted | s | "
          "MMD p (median) | MMD drifted | s | class-share JS (threshold) | JS drifted |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (name, view, scenario), cell in cells.items():
        mmd = (f"{np.median(cell['mmd_p']):.3f} | {sum(cell['mmd_drift'])}/{n} | {np.mean(cell['mmd_s']):.1f}"
               if cell["mmd_p"] else "- | - | -")
        js = (f"{np.mean(cell['js']):.3f} ({np.mean(cell['js_threshold']):.3f}) | {sum(cell['js_drift'])}/{n}"
              if cell["js"] else "- | -")
        print(f"| {name} | {view} | {scenario} | {EXPECTED[scenario]} | {np.mean(cell['auc']):.3f} "
              f"({np.mean(cell['auc_threshold']):.3f}) | {sum(cell['auc_drift'])}/{n} | {np.mean(cell['auc_s']):.1f} | "
              f"{mmd} | {js} |")


if __name__ == "__main__":
    main()
