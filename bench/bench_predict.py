"""Time predict (both strategies) against a plain numpy cosine argmax, in the same run.

    .venv/bin/python bench/bench_predict.py [--n-items 200000] [--dim 768] [--classes 13]

The catalog is synthetic (make_catalog). Each timing is the best of --repeats
runs, interleaved so that machine noise hits all three alike; only the ratios
are meant to be compared.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from pairwise_core import Modality, PairwiseClassifier, embeddings, make_catalog


def cosine_argmax(x: np.ndarray, class_unit: np.ndarray) -> np.ndarray:
    """The baseline as a numpy user writes it."""
    return np.argmax((x / np.linalg.norm(x, axis=1, keepdims=True)) @ class_unit.T, axis=1)


def best_of(repeats: int, runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-items", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--classes", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    items, classes = make_catalog(args.n_items, args.classes, modalities=(Modality("image", args.dim, 0.045),))
    x = embeddings(items, "image_embedding")
    c = embeddings(classes, "image_embedding")
    class_unit = c / np.linalg.norm(c, axis=1, keepdims=True)
    tourney = PairwiseClassifier(c, strategy="tourney").fit(x)
    round_robin = PairwiseClassifier(c, strategy="round_robin").fit(x)
    timings = best_of(args.repeats, {
        "cosine argmax": lambda: cosine_argmax(x, class_unit),
        "tourney": lambda: tourney.predict(x, return_margin=True),
        "round_robin": lambda: round_robin.predict(x, return_margin=True),
    })
    base = timings["cosine argmax"]
    print(f"{args.n_items} items x {args.dim} float32, {args.classes} classes, best of {args.repeats}")
    for name, seconds in timings.items():
        print(f"  {name:<14} {seconds * 1e3:8.1f} ms   {seconds / base:5.2f}x cosine argmax")


if __name__ == "__main__":
    main()
