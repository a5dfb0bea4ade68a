"""Pass 1: pair statistics and the seeded sample per partition (mapped), then one merge and the mask fit."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
from prefect import task

from pairwise_core import PairStats, PairwiseClassifier
from pairwise_core.model import Classifiers
from pairwise_core.discriminant import ClassSums
from tasks.policy import IO_TASK
from tasks.sample import N_FOLDS, SampleParts, folds_of, gold_codes, hash_unit, item_hash
from tasks.sources import Partition, Plan, matrix, read_partition
from tasks.models import class_hash, save_part
from tasks.staging import Staging, classifiers, ends_with_its_run, load_stats, save_stats, write_parquet


@task(name="pair-stats", **IO_TASK)
@ends_with_its_run
def partition_stats(
    partition: Partition, plan: Plan, classes_path: str, core_params: dict[str, Any], staging: Staging,
    sample_rate: float, class_sums: bool,
) -> dict[str, str]:
    """Stream one partition; return the paths of its pair statistics, of its share of the seeded sample
    and, with ``class_sums``, of the gold labels' class sums per fold (the label-aware review's means,
    METHOD.md step 9).

    The sample (the items whose seeded hash falls in the share ``sample_rate``, so the same items whatever
    the partitioning; every modality, and the gold label when there is one) carries the refinement's EM
    iterations, its calibration and the review's covariance after pass 1, so the labelling pass can apply
    them at once.
    """
    models = classifiers(classes_path, plan, core_params)
    k = len(plan.class_names)
    totals = {m: PairStats.zeros(k, plan.dims[m]) for m in plan.modalities}
    sums = {m: ClassSums.zeros(N_FOLDS, k, plan.dims[m]) for m in plan.modalities}
    sample = SampleParts(plan)
    for batch in read_partition(partition, plan.item_columns()):
        hashes = item_hash(batch.column("item_id"), core_params["seed"])
        folds = folds_of(hashes)
        rows = np.flatnonzero(hash_unit(hashes) < sample_rate)
        gold = gold_codes(batch.column(plan.gold_column), plan) if plan.gold_column else None
        for modality, model in models.items():
            usable = matrix(batch, modality, plan.dims[modality])  # rejected rows are recorded in pass 2
            if len(usable.x):
                totals[modality] = totals[modality] + model.pair_stats(usable.x)
                if class_sums:
                    sums[modality] = sums[modality] + ClassSums.of(
                        usable.x, gold[usable.valid], folds[usable.valid], N_FOLDS, k, usable.inverse_norms())
            sample.add_modality(modality, usable, rows)
        sample.add_rows(folds[rows], None if gold is None else gold[rows], len(rows))
    paths = {
        "stats": save_stats(staging.path("stats", f"part-{partition.index:05d}.npz"), totals),
        "sample": sample.save(staging.path("sample", f"part-{partition.index:05d}.npz")),
    }
    if class_sums:
        paths["class_sums"] = save_stats(staging.path("class_sums", f"part-{partition.index:05d}.npz"), sums)
    return paths


@task(name="fit-masks", **IO_TASK)
def fit_masks(
    stats_paths: list[str], plan: Plan, classes_path: str, core_params: dict[str, Any], staging: Staging, run_id: str
) -> dict[str, Any]:
    """Merge the partitions' statistics and fit masks.

    Returns the staged model's folder (its part ``classifiers`` written) and its class hash, the staged
    pair_masks rows, and each modality's bracket (class names in seeded order, and the slots).
    """
    models = classifiers(classes_path, plan, core_params)
    for modality, model in models.items():
        # one merge of every partition's statistics: two at a time would copy all merged so far per file
        model.merge_stats(PairStats.merge(load_stats(path, (modality,))[modality] for path in stats_paths))
    # the modalities' masks are independent, and numpy releases the GIL on the big arrays
    # (K = 500, 100k items: about 2.7 s CPU each, of which the mask fit 0.8-0.9 s and _derive the rest)
    with ThreadPoolExecutor(max_workers=len(models)) as pool:
        list(pool.map(PairwiseClassifier.finalize, models.values()))
    tables = []
    for modality, model in models.items():
        names = np.asarray(plan.class_names, dtype=object)
        lo, hi = model.pairs_[:, 0], model.pairs_[:, 1]
        n_dims = np.count_nonzero(model.pair_masks_, axis=1)
        # row-major: each pair's dims in order; np.nonzero would also build the row of each (K = 500: 3-4x slower)
        dims = (np.flatnonzero(model.pair_masks_) % model.pair_masks_.shape[1]).astype(np.int32)
        offsets = np.concatenate([[0], np.cumsum(n_dims)]).astype(np.int32)
        tables.append(pa.table({
            "run_id": pa.array(np.full(lo.size, run_id, dtype=object), pa.string()),
            "modality": pa.array(np.full(lo.size, modality, dtype=object), pa.string()),
            "class_a": pa.array(names[lo], pa.string()),
            "class_b": pa.array(names[hi], pa.string()),
            "n_dims": pa.array(n_dims.astype(np.int32)),
            "dims": pa.ListArray.from_arrays(pa.array(offsets), pa.array(dims)),
            "n_a": pa.array(model.pair_counts_ab_[:, 0]),
            "n_b": pa.array(model.pair_counts_ab_[:, 1]),
            "fallback": pa.array(model.pair_fallback_),
        }))
    table = pa.concat_tables(tables)
    return {
        "model": save_part(staging.model, "classifiers", Classifiers(plan.class_names, models)),
        "class_hash": class_hash(plan.class_names, {m: model.class_embeddings for m, model in models.items()}),
        "pair_masks": write_parquet(staging.path("pair_masks", "part-00000.parquet"), table),
        # the seeded class order, and the tourney's slots over it (or over an item's candidates): -1 is a bye
        "brackets": {
            m: {"order": [plan.class_names[k] for k in model.bracket_], "slots": model.bracket_slots_.tolist()}
            for m, model in models.items()
        },
    }
