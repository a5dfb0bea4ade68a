"""Review of the catalog's given labels (METHOD.md step 9): the evidence of each route, and the ranked
annotation_issues of a run.

After pass 1, ``fit_review`` fits the label-aware discriminant (class sums of
every item, covariance of the seeded sample) and, for the route 'both', the
weights of the two routes' log posteriors; the label pass applies them to
every item (``Review.judge``). The final order is one sort that DuckDB spills
to disk past its memory limit; rows are numbered while they stream out.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import task
from threadpoolctl import threadpool_limits

from pairwise_core.discriminant import ClassSums, FoldDiscriminant, Scatter
from pairwise_core.joint import FIT_CLASSES, fit_weights, joint_log_posterior, prune_classes
from pairwise_core.model import Refinement, Review, Route
from pairwise_core.pair_stats import normalize_rows
from tasks.policy import IO_TASK
from tasks.models import load_part, save_part
from tasks.refine import load_labels, sample_terms
from tasks.sample import N_FOLDS, load_sample
from tasks.sources import Plan
from tasks.sql import statement
from tasks.staging import Staging, load_stats
from tasks.store import DUCKDB_MEMORY

_BATCH_ROWS = 65_536
# the weight of p_given_parent in annotation_issues' order, p_given^(1 - w) * p_given_parent^w: a wrong parent
# comes first without losing the sibling swaps (bench/research_parent_review.py, docs/results.md)
PARENT_WEIGHT = 0.25
# fewer complete labelled sample rows than this: no label-aware route (a covariance from noise)
MIN_REVIEW_ROWS = 200


def choose_route(requested: str, n_rows: int) -> Route:
    """'auto' is 'both'; a label-aware route needs enough labelled sample rows, else zero-shot."""
    route = "both" if requested == "auto" else requested
    return route if route == "zero-shot" or n_rows >= MIN_REVIEW_ROWS else "zero-shot"


@task(name="fit-review", **IO_TASK)
def fit_review(sample_paths: list[str], class_sums_paths: list[str | None], plan: Plan, model_dir: str,
               requested: str, keep_below: float, labels_path: str) -> dict[str, object]:
    """Fit the label-aware discriminant on the given labels and the routes' weights; write the part
    ``review`` of the model in ``model_dir``; return what was fitted (kept in runs.details.review).
    ``labels_path``: the sample's pairwise labels, as the refinement's fit saved them.

    It runs alone between the passes, so its products (the sample's scatter, the solves, the polish) get
    every core: the flow holds BLAS to one thread for the parallel partition tasks.
    """
    with threadpool_limits(limits=os.cpu_count(), user_api="blas"):
        return _fit_review(sample_paths, class_sums_paths, plan, model_dir, requested, keep_below, labels_path)


def _fit_review(sample_paths: list[str], class_sums_paths: list[str | None], plan: Plan, model_dir: str,
                requested: str, keep_below: float, labels_path: str) -> dict[str, object]:
    sample = load_sample(sample_paths, plan.modalities)
    complete = (sample.gold >= 0) & np.all([sample.valid[m] for m in plan.modalities], axis=0)
    route = choose_route(requested, int(complete.sum()))
    details: dict[str, object] = {"route": route, "requested": requested, "sample_rows": int(complete.sum()),
                                  "issues_below": keep_below}
    review = Review.zero_shot(keep_below)
    if route != "zero-shot":
        k = len(plan.class_names)
        sums = {m: ClassSums.zeros(N_FOLDS, k, plan.dims[m]) for m in plan.modalities}
        for path in class_sums_paths:
            for m, part in load_stats(str(path), plan.modalities, ClassSums).items():
                sums[m] = sums[m] + part
        rows = sample.rows(np.flatnonzero(complete))
        unit = [normalize_rows(rows.x[m]) for m in plan.modalities]  # as the label pass scores them
        x = np.concatenate(unit, axis=1)
        discriminant = FoldDiscriminant([sums[m] for m in plan.modalities],
                                        Scatter.of(x, rows.gold, rows.fold, N_FOLDS, k), x, rows.gold, rows.fold)
        review = Review(route, discriminant, np.array([1.0, 0.0]), keep_below)
        details |= {"shrinkage": discriminant.shrinkage, "temperature": discriminant.temperature,
                    "polish_steps": discriminant.polish_steps}
        if route == "both":
            refinement: Refinement = load_part(model_dir, "refinement")
            present = np.ones((rows.n_rows, len(plan.modalities)), bool)
            labels = {m: row_labels[complete] for m, row_labels in load_labels(labels_path, plan.modalities).items()}
            zero_shot = joint_log_posterior(sample_terms(refinement.refiners, labels, rows),
                                            present, refinement.free_weights)
            aware = discriminant.log_posterior(unit, present, rows.fold)
            both = np.ones((rows.n_rows, 2), bool)
            pruned, _, at = prune_classes(np.stack([aware, zero_shot], axis=1), both, FIT_CLASSES, rows.gold)
            review.weights = fit_weights(pruned, both, at)
            details["weights"] = {"label_aware": float(review.weights[0]), "zero_shot": float(review.weights[1])}
    save_part(Path(model_dir), "review", review)
    return details


def rank_annotation_issues(review_paths: list[str], workdir: Path, run_id: str) -> list[str]:
    """Write the run's annotation_issues rows, ranked, to ``workdir``; return the file (none if no issue)."""
    workdir.mkdir(exist_ok=True)
    out = workdir / "annotation_issues.parquet"
    with duckdb.connect(config=DUCKDB_MEMORY) as con:
        con.execute("SET temp_directory = ?", [str(workdir / "spill")])
        con.read_parquet(review_paths).create_view("review_items")
        reader = con.sql(statement("annotation_issues"), params={"run_id": run_id, "parent_weight": PARENT_WEIGHT}
                         ).to_arrow_reader(_BATCH_ROWS)
        writer, rank = None, 0
        for batch in reader:
            ranks = pa.array(np.arange(rank + 1, rank + 1 + batch.num_rows, dtype=np.int32))
            table = pa.Table.from_batches([batch]).add_column(1, "rank", ranks)
            writer = writer or pq.ParquetWriter(out, table.schema)
            writer.write_table(table)
            rank += batch.num_rows
    if writer is None:
        return []
    writer.close()
    return [str(out)]


@task(name="annotation-issues", **IO_TASK)
def stage_annotation_issues(review_paths: list[str], staging: Staging, run_id: str) -> list[str]:
    """Rank the items with a given label by the probability that it is right (and its parent, with a parent
    level: PARENT_WEIGHT); return the staged Parquet file."""
    return rank_annotation_issues(review_paths, staging.path("review"), run_id)
