"""Could the refinement's E-step at many classes be pruned to a few candidate classes per item? (issue 22)

    .venv/bin/pairwise run --items 'bench/data/synthetic-100000-k500/items/*.parquet' \
        --classes CLASSES --db /tmp/k500.duckdb --gold-column label --quiet
    PYTHONPATH=. .venv/bin/python bench/research_estep_rank.py --items 'bench/data/synthetic-100000-k500/items/*.parquet' \
        --classes CLASSES --db /tmp/k500.duckdb

With the latest stored model of --db, on the first partition's second record batch (8,192 items; the first
batch gives the rows' principal directions), per modality: the exact refined terms over all K classes, and
how often the refined label (their argmax) is among an item's top m classes when these are chosen by

- the cosines (the zero-shot ranking), with the posterior mass left outside them;
- approximate terms from the unit rows projected on their top principal directions (rank r);
- approximate terms from the rows projected on the top right singular vectors of the E-step's own weights
  (rank r), the anchor exact.
"""

from __future__ import annotations

import argparse

import numpy as np

from tasks.models import load_model
from tasks.runs import check_stored_model
from tasks.sources import inspect_sources, matrix, read_partition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", required=True)
    parser.add_argument("--classes", required=True)
    parser.add_argument("--db", required=True, help="a DuckDB file with a stored model of these classes")
    parser.add_argument("--ranks", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--tops", type=int, nargs="+", default=[8, 16, 32])
    args = parser.parse_args()

    plan = inspect_sources(args.items, args.classes, db=args.db, gold_column=None, chunk_size=50_000)
    sealed = check_stored_model.fn(plan, args.classes, args.db, "latest")["sealed"]
    fitted = load_model(sealed["folder"], sealed["content_hash"], sealed["model_id"])
    batches = read_partition(plan.partitions[0], plan.item_columns())
    basis_batch, batch = next(batches), next(batches)
    for modality, model in fitted.classifiers.models.items():
        refiner = fitted.refinement.refiners[modality]
        x = matrix(batch, modality, plan.dims[modality]).x
        result = model.classify(x, directions=refiner.directions(x.dtype))
        terms = refiner.log_terms_of(result.products, result.cosines, result.label).astype(np.float64)
        refined = terms.argmax(axis=1)
        posterior = np.exp(terms - terms.max(axis=1, keepdims=True))
        posterior /= posterior.sum(axis=1, keepdims=True)
        anchor_part = terms - result.products.astype(np.float64)  # lambda log y0 - offsets: exact in both
        unit = x.astype(np.float64) / np.linalg.norm(x, axis=1)[:, None]
        weights = refiner.directions(np.float64)  # (K, d)

        def share(scores: np.ndarray, m: int) -> float:
            return float((np.argsort(-scores, axis=1)[:, :m] == refined[:, None]).any(axis=1).mean())

        for m in args.tops:
            top = np.argsort(-result.cosines, axis=1)[:, :m]
            outside = 1 - np.take_along_axis(posterior, top, axis=1).sum(axis=1).mean()
            print(f"{modality}, top {m} by cosine: refined label among them {share(result.cosines, m):.4f}, "
                  f"posterior mass outside {outside:.3f}")
        rows = matrix(basis_batch, modality, plan.dims[modality]).x.astype(np.float64)
        rows /= np.linalg.norm(rows, axis=1)[:, None]
        row_basis = np.linalg.svd(rows - rows.mean(axis=0), full_matrices=False)[2]
        weight_basis = np.linalg.svd(weights, full_matrices=False)[2]
        for name, basis in (("rows' principal directions", row_basis), ("E-step weights' singular vectors", weight_basis)):
            for rank in args.ranks:
                projected = basis[:rank]
                approximate = (unit @ projected.T) @ (projected @ weights.T) + anchor_part
                print(f"{modality}, {name}, rank {rank}: refined label among the top "
                      + ", ".join(f"{m} {share(approximate, m):.4f}" for m in args.tops))


if __name__ == "__main__":
    main()
