"""Time the label-aware review's parts (pairwise_core/discriminant.py) as the pipeline runs them, in one run.

    .venv/bin/python bench/bench_review.py [--sample 20000] [--batch 65536] [--dim 768] [--classes 13]

Synthetic unit rows, two modalities. The parts: the fit between the passes
(the sample's scatter, then FoldDiscriminant: shrinkage and temperature,
the folds' solves, the polish) with every BLAS thread, as fit-review runs;
then, with one BLAS thread as the partition tasks run, per batch and
modality, the class sums of pass 1 and the scoring of pass 2, each beside a
plain product of the batch with its class embeddings (the cosine scores the
tourney computes anyway) for scale. Best of --repeats; compare ratios, not
seconds: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from pairwise_core.discriminant import ClassSums, FoldDiscriminant, Scatter
from pairwise_core.pair_stats import normalize_rows

N_FOLDS = 5


def best(repeats: int, run: Callable[[], object]) -> float:
    seconds = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds = min(seconds, time.perf_counter() - start)
    return seconds


def rows(rng: np.random.Generator, centres: np.ndarray, labels: np.ndarray) -> list[np.ndarray]:
    """Per modality, unit rows around their class's centre."""
    dim = centres.shape[1] // 2
    x = centres[labels] + rng.standard_normal((labels.size, centres.shape[1]), dtype=np.float32) * 0.03
    return [normalize_rows(x[:, :dim]), normalize_rows(x[:, dim:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=20_000, help="labelled sample rows (the pipeline's default)")
    parser.add_argument("--batch", type=int, default=65_536, help="rows per record batch")
    parser.add_argument("--dim", type=int, default=768, help="dimensions per modality")
    parser.add_argument("--classes", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    k = args.classes
    centres = rng.standard_normal((k, 2 * args.dim), dtype=np.float32) * 0.05
    labels, fold = rng.integers(0, k, args.sample), rng.integers(0, N_FOLDS, args.sample)
    xs = rows(rng, centres, labels)
    x = np.concatenate(xs, axis=1)
    sums = [ClassSums.of(m, labels, fold, N_FOLDS, k) for m in xs]
    print(f"fit: {args.sample} sample rows x 2 x {args.dim}-d, {k} classes, {os.cpu_count()} BLAS threads, "
          f"best of {args.repeats}")
    with threadpool_limits(limits=os.cpu_count(), user_api="blas"):
        scatter = Scatter.of(x, labels, fold, N_FOLDS, k)
        seconds = best(args.repeats, lambda: Scatter.of(x, labels, fold, N_FOLDS, k))
        print(f"  {'scatter':<34}{seconds:6.2f} s")
        for steps in (0, 5):
            seconds = best(args.repeats, lambda: FoldDiscriminant(sums, scatter, x, labels, fold, polish_steps=steps))
            print(f"  {f'discriminant, {steps} polish steps':<34}{seconds:6.2f} s")
    model = FoldDiscriminant(sums, scatter, x, labels, fold)

    batch_labels = rng.integers(0, k, args.batch)
    batch_fold = rng.integers(0, N_FOLDS, args.batch)
    raw = [m * rng.uniform(0.5, 2.0, (args.batch, 1)).astype(np.float32) for m in rows(rng, centres, batch_labels)]
    inverse = [1 / np.sqrt(np.einsum("ij,ij->i", m, m)) for m in raw]
    present = np.ones((args.batch, 2), bool)
    class_unit = normalize_rows(centres[:, : args.dim]).T.copy()
    print(f"per batch: {args.batch} rows x {args.dim}-d, one BLAS thread, best of {args.repeats}")
    with threadpool_limits(limits=1, user_api="blas"):
        base = best(args.repeats, lambda: raw[0] @ class_unit)
        parts = {
            "class sums, one modality (pass 1)": lambda: ClassSums.of(raw[0], batch_labels, batch_fold, N_FOLDS, k,
                                                                       inverse[0]),
            "scoring, both modalities (pass 2)": lambda: model.log_posterior(raw, present, batch_fold, inverse),
        }
        print(f"  {'cosine scores, one modality':<34}{base * 1e3:7.1f} ms   1.00x")
        for name, run in parts.items():
            seconds = best(args.repeats, run)
            print(f"  {name:<34}{seconds * 1e3:7.1f} ms   {seconds / base:4.2f}x")


if __name__ == "__main__":
    main()
