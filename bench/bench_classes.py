"""Cost per item as the number of classes grows, and what candidate pruning costs in accuracy.

    .venv/bin/python bench/bench_classes.py [--n-items 20000] [--candidates 8]

Synthetic catalogs (make_catalog, one 768-d modality, signal_strength 0.15 so
that many classes stay separable). For each K: classify (base + pairwise,
margins included) per item, pruned to the top-m candidates, against a plain
numpy cosine argmax at the same K, in the same run; unpruned too where its
K(K-1)/2 pairs fit. Accuracy is against the generator's labels.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pairwise_core import Modality, PairwiseClassifier, accuracy, embeddings, make_catalog


def per_item_us(run, n: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--classes", type=int, nargs="+", default=[13, 50, 200, 500])
    parser.add_argument("--unpruned-up-to", type=int, default=200)
    parser.add_argument("--signal", type=float, default=0.15, help="make_catalog signal_strength")
    args = parser.parse_args()
    m = args.candidates
    print(f"{args.n_items} items x 768 float32, candidates m = {m}; times are us per item, best of 3\n")
    print("| K | cosine argmax | pruned (m) | unpruned | pruned acc | unpruned acc | base acc | pairs with masks (pruned) |")
    print("|---|---|---|---|---|---|---|---|")
    for k in args.classes:
        items, classes = make_catalog(args.n_items, k, modalities=(Modality("image", 768, 0.045),),
                                      signal_strength=args.signal, seed=k)
        names = classes.column("class_name").to_pylist()
        index = {name: i for i, name in enumerate(names)}
        gold = np.array([index[v] for v in items.column("label").to_pylist()])
        x, c = embeddings(items, "image_embedding"), embeddings(classes, "image_embedding")
        unit = c / np.linalg.norm(c, axis=1, keepdims=True)
        cosine = per_item_us(lambda: np.argmax((x / np.linalg.norm(x, axis=1, keepdims=True)) @ unit.T, axis=1),
                             len(x))
        pruned = PairwiseClassifier(c, candidates=m).fit(x)
        pruned_us = per_item_us(lambda: pruned.classify(x), len(x))
        result = pruned.classify(x)
        cells = [f"{cosine:.2f}", f"{pruned_us:.2f}"]
        if k <= args.unpruned_up_to:
            full = PairwiseClassifier(c).fit(x)
            cells.append(f"{per_item_us(lambda: full.classify(x), len(x), repeats=1):.2f}")
            full_acc = f"{accuracy(gold, full.predict(x)):.3f}"
        else:
            cells.append("-")
            full_acc = "-"
        cells += [f"{accuracy(gold, result.label):.3f}", full_acc, f"{accuracy(gold, result.base_label):.3f}",
                  f"{len(pruned.pairs_)} of {k * (k - 1) // 2}"]
        print(f"| {k} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
