"""Base vs pairwise on a real labelled catalog (the README's real-data table).

    .venv/bin/python bench/evaluate_real.py [--data bench/data/real] [--split]

The catalog is built by bench/build_real_catalog.py (WordNet noun synsets, two
text views embedded with MiniLM). Defaults of PairwiseClassifier are used as
they are. With --split, the items are split in two seeded halves and the
figures are given for each: the defaults were chosen on half "tune" (seed 0)
and are reported on half "held-out".
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from pairwise_core import PairwiseClassifier, accuracy, agreement_f1, cohen_kappa, embeddings, f1_weighted


def evaluate(x: dict[str, np.ndarray], c: dict[str, np.ndarray], gold: np.ndarray, strategy: str) -> list[str]:
    views = list(x)
    results = {v: PairwiseClassifier(c[v], strategy=strategy).fit(x[v]).classify(x[v]) for v in views}
    rows = []
    for method, attr in (("base", "base_label"), (f"pairwise {strategy}", "label")):
        labels = {v: getattr(results[v], attr) for v in views}
        a, b = views
        cells = [agreement_f1(labels[a], labels[b]), cohen_kappa(labels[a], labels[b])]
        for v in views:
            cells += [accuracy(gold, labels[v]), f1_weighted(gold, labels[v])]
        rows.append(f"| {method} | " + " | ".join(f"{value:.3f}" for value in cells) + " |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("bench/data/real"))
    parser.add_argument("--split", action="store_true")
    args = parser.parse_args()
    items = pq.read_table(args.data / "items.parquet")
    classes = pq.read_table(args.data / "classes.parquet")
    names = classes.column("class_name").to_pylist()
    class_id = {name: k for k, name in enumerate(names)}
    gold = np.array([class_id[label] for label in items.column("label").to_pylist()])
    views = [name.removesuffix("_embedding") for name in classes.column_names if name.endswith("_embedding")]
    x = {v: embeddings(items, f"{v}_embedding") for v in views}
    c = {v: embeddings(classes, f"{v}_embedding") for v in views}
    halves = {"all": np.ones(gold.size, dtype=bool)}
    if args.split:
        tune = np.random.default_rng(0).random(gold.size) < 0.5
        halves = {"tune": tune, "held-out": ~tune}
    a, b = views
    print(f"{gold.size} items, {len(names)} classes, views {a} and {b} ({x[a].shape[1]}-d)")
    for half, rows in halves.items():
        start = time.perf_counter()
        print(f"\n{half} ({rows.sum()} items)\n")
        print(f"| method | agreement F1 ({a} vs {b}) | kappa | {a} gold acc | {a} gold F1 | {b} gold acc | {b} gold F1 |")
        print("|---|---|---|---|---|---|---|")
        for strategy in ("tourney", "round_robin"):
            lines = evaluate({v: x[v][rows] for v in views}, c, gold[rows], strategy)
            print("\n".join(lines if strategy == "tourney" else lines[1:]))
        print(f"\n({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
