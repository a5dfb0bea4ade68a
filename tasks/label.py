"""Pass 2: label one partition with the fitted model and stage its item_labels rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from tasks.policy import IO_TASK
from tasks.sources import Partition, Plan, matrix, read_partition
from tasks.staging import Staging, load_model

LABEL_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("item_id", pa.string()),
    ("modality", pa.string()),
    ("base_class", pa.string()),
    ("base_score", pa.float32()),
    ("base_margin", pa.float32()),
    ("pairwise_class", pa.string()),
    ("pairwise_margin", pa.float32()),
    ("gold_class", pa.string()),
    ("given_gap", pa.float32()),
    ("given_h2h", pa.float32()),
])


REJECTED_SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("item_id", pa.string()),
    ("modality", pa.string()),
    ("reason", pa.string()),
])


@task(name="label-partition", **IO_TASK)
def label_partition(
    partition: Partition, plan: Plan, model_path: str, staging: Staging, run_id: str
) -> dict[str, str]:
    """Run the tourney over one partition, streaming; stage its item_labels and rejected_items rows.

    Every (item, modality) lands in exactly one of the two. The partition is
    decoded again rather than spilled in pass 1: with Arrow's allocator
    tuned, decoding (about 0.9 GB/s here) beat writing and reading back a raw
    float32 spill (bench/bench_pipeline.py, 1M items).
    """
    models = load_model(model_path)
    names = pa.array(plan.class_names, pa.string())
    paths = {"item_labels": staging.part("item_labels", partition.index),
             "rejected_items": staging.part("rejected_items", partition.index)}
    with pq.ParquetWriter(paths["item_labels"], LABEL_SCHEMA) as labels, \
            pq.ParquetWriter(paths["rejected_items"], REJECTED_SCHEMA) as rejected:
        for batch in read_partition(partition, plan.item_columns()):
            ids = batch.column("item_id").cast(pa.string())
            gold = batch.column(plan.gold_column).cast(pa.string()) if plan.gold_column else None
            # the gold column is the catalog's current label: review it in the same pass (-1: none or unknown)
            given = None if gold is None else pc.index_in(gold, value_set=names).fill_null(-1).to_numpy()
            for modality, model in models.items():
                usable = matrix(batch, modality, plan.dims[modality])
                if not usable.valid.all():
                    bad = ~usable.valid
                    rejected.write_table(pa.table({
                        "run_id": _repeat(run_id, int(bad.sum())),
                        "item_id": ids.filter(pa.array(bad)),
                        "modality": _repeat(modality, int(bad.sum())),
                        "reason": pa.array(usable.reasons[bad], pa.string()),
                    }, schema=REJECTED_SCHEMA))
                n = len(usable.x)
                if n == 0:
                    continue
                keep = pa.array(usable.valid)
                result = model.classify(usable.x, given=None if given is None else given[usable.valid])
                no_gold = pa.nulls(n, pa.float32())
                labels.write_table(pa.table({
                    "run_id": _repeat(run_id, n),
                    "item_id": ids.filter(keep),
                    "modality": _repeat(modality, n),
                    "base_class": names.take(result.base_label),
                    "base_score": pa.array(result.base_score.astype(np.float32)),
                    "base_margin": pa.array(result.base_margin.astype(np.float32)),
                    "pairwise_class": names.take(result.label),
                    "pairwise_margin": pa.array(result.margin.astype(np.float32)),
                    "gold_class": gold.filter(keep) if gold is not None else pa.nulls(n, pa.string()),
                    "given_gap": no_gold if given is None else _nan_to_null(result.given_gap),
                    "given_h2h": no_gold if given is None else _nan_to_null(result.given_h2h),
                }, schema=LABEL_SCHEMA))
    return {kind: str(path) for kind, path in paths.items()}


def _nan_to_null(values: np.ndarray) -> pa.Array:
    return pa.array(values, pa.float32(), mask=np.isnan(values))


def _repeat(value: str, n: int) -> pa.Array:
    return pa.array(np.full(n, value, dtype=object), pa.string())
