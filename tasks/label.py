"""Pass 2: label one partition with the fitted model and stage its item_labels rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
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
])


@task(name="label-partition", **IO_TASK)
def label_partition(partition: Partition, plan: Plan, model_path: str, staging: Staging, run_id: str) -> str:
    """Run the tourney over one partition, streaming; return the staged item_labels part.

    The partition is decoded again rather than spilled in pass 1: with Arrow's
    allocator tuned, decoding (about 0.9 GB/s here) beat writing and reading
    back a raw float32 spill (bench/bench_pipeline.py, 1M items).
    """
    models = load_model(model_path)
    names = pa.array(plan.class_names, pa.string())
    path = staging.part("item_labels", partition.index)
    with pq.ParquetWriter(path, LABEL_SCHEMA) as writer:
        for batch in read_partition(partition, plan.item_columns()):
            n = batch.num_rows
            gold = batch.column(plan.gold_column) if plan.gold_column else pa.nulls(n, pa.string())
            for modality, model in models.items():
                result = model.classify(matrix(batch, modality))
                writer.write_table(pa.table({
                    "run_id": pa.array(np.full(n, run_id, dtype=object), pa.string()),
                    "item_id": batch.column("item_id").cast(pa.string()),
                    "modality": pa.array(np.full(n, modality, dtype=object), pa.string()),
                    "base_class": names.take(result.base_label),
                    "base_score": pa.array(result.base_score.astype(np.float32)),
                    "base_margin": pa.array(result.base_margin.astype(np.float32)),
                    "pairwise_class": names.take(result.label),
                    "pairwise_margin": pa.array(result.margin.astype(np.float32)),
                    "gold_class": gold.cast(pa.string()),
                }, schema=LABEL_SCHEMA))
    return str(path)
