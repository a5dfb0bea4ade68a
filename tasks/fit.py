"""Pass 1: pair statistics per partition (mapped), then one merge and the mask fit."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from prefect import task

from pairwise_core import PairStats
from tasks.policy import IO_TASK
from tasks.sources import Partition, Plan, matrix, read_partition
from tasks.staging import Staging, classifiers, load_stats, save_model, save_stats, write_parquet


@task(name="pair-stats", **IO_TASK)
def partition_stats(
    partition: Partition, plan: Plan, classes_path: str, core_params: dict[str, Any], staging: Staging
) -> str:
    """Stream one partition and return the path of its pair statistics, per modality."""
    models = classifiers(classes_path, plan, core_params)
    totals = {m: PairStats.zeros(len(plan.class_names), plan.dims[m]) for m in plan.modalities}
    columns = ["item_id", *(f"{m}_embedding" for m in plan.modalities)]
    for batch in read_partition(partition, columns):
        for modality, model in models.items():
            model.pair_stats(matrix(batch, modality), into=totals[modality])
    return save_stats(staging.path("stats", f"part-{partition.index:05d}.npz"), totals)


@task(name="fit-masks", **IO_TASK)
def fit_masks(
    stats_paths: list[str], plan: Plan, classes_path: str, core_params: dict[str, Any], staging: Staging, run_id: str
) -> dict[str, Any]:
    """Merge the partitions' statistics and fit masks.

    Returns the paths of the pickled fitted models and of the staged
    pair_masks rows, and each modality's bracket (class names, seeded order).
    """
    models = classifiers(classes_path, plan, core_params)
    for path in stats_paths:
        for modality, stats in load_stats(path, plan.modalities).items():
            models[modality].merge_stats(stats)
    rows: dict[str, list] = {k: [] for k in ("modality", "class_a", "class_b", "n_dims", "dims", "n_a", "n_b", "fallback")}
    for modality, model in models.items():
        model.finalize()
        for a in range(model.n_classes_):
            for b in range(a + 1, model.n_classes_):
                dims = model.masks_[a, b].nonzero()[0]
                rows["modality"].append(modality)
                rows["class_a"].append(plan.class_names[a])
                rows["class_b"].append(plan.class_names[b])
                rows["n_dims"].append(int(dims.size))
                rows["dims"].append(dims.astype("int32"))
                rows["n_a"].append(int(model.pair_counts_[a, b]))
                rows["n_b"].append(int(model.pair_counts_[b, a]))
                rows["fallback"].append(bool(model.fallback_[a, b]))
    table = pa.table({
        "run_id": pa.array([run_id] * len(rows["modality"]), pa.string()),
        **{k: v for k, v in rows.items() if k != "dims"},
        "dims": pa.array(rows["dims"], pa.list_(pa.int32())),
    })
    return {
        "model": save_model(staging.path("model.pkl"), models),
        "pair_masks": write_parquet(staging.path("pair_masks", "part-00000.parquet"), table),
        "brackets": {m: [plan.class_names[k] for k in model.bracket_] for m, model in models.items()},
    }
