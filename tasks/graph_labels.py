"""After the graph refinement: a partition's staged label rows, rewritten from its propagated posteriors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task

from tasks.label import LABEL_SCHEMA, joint_rows, parent_columns
from tasks.metric_counts import MetricCounts
from tasks.policy import IO_TASK
from tasks.sources import Plan
from tasks.staging import Staging


@task(name="apply-graph", **IO_TASK)
def apply_graph(staged: dict[str, Any], posteriors: str, plan: Plan, staging: Staging, index: int,
                run_id: str) -> dict[str, Any]:
    """The partition's item_labels and joint_labels rows with the graph's refined and joint labels (the base
    and pairwise ones stay), and their metric counts; ``staged`` is what its label task returned, with these
    paths replaced."""
    with np.load(staged["graph_parts"], allow_pickle=False) as parts:
        present, modalities = parts["present"], [str(m) for m in parts["modalities"]]
    with np.load(posteriors, allow_pickle=False) as data:
        views = [data[f"posterior/{i}"] for i in range(len(modalities))]
        joint = data["joint"]
    ids = pq.read_table(staged["catalog_state"], columns=["item_id"]).column("item_id")
    names = pa.array(plan.class_names, pa.string())
    refined = np.stack([view.argmax(axis=1) for view in views], axis=1)

    labels = pq.read_table(staged["item_labels"])
    item_of = pc.index_in(labels.column("item_id"), value_set=ids).to_numpy(zero_copy_only=False)
    view = pc.index_in(labels.column("modality"), value_set=pa.array(modalities)).to_numpy(zero_copy_only=False)
    posterior = np.zeros((labels.num_rows, len(names)), np.float32)
    for v, values in enumerate(views):
        posterior[view == v] = values[item_of[view == v]]
    label = posterior.argmax(axis=1)
    parent_class, parent_confidence = parent_columns(plan.parent, posterior)
    for column, values in (("refined_class", names.take(pa.array(label))),
                           ("refined_confidence", pa.array(posterior[np.arange(len(label)), label], pa.float32())),
                           ("parent_class", parent_class), ("parent_confidence", parent_confidence)):
        labels = labels.set_column(LABEL_SCHEMA.get_field_index(column), column, values)

    before = pq.read_table(staged["joint_labels"], columns=["item_id", "gold_class"])
    row = pc.index_in(before.column("item_id"), value_set=ids).to_numpy(zero_copy_only=False)
    joint_table = joint_rows(run_id, before.column("item_id"), joint[row], refined[row], present[row],
                             before.column("gold_class"), names, plan.parent)

    paths = {"item_labels": staging.part("graph_item_labels", index),
             "joint_labels": staging.part("graph_joint_labels", index)}
    pq.write_table(labels, paths["item_labels"])
    pq.write_table(joint_table, paths["joint_labels"])
    counts = MetricCounts(plan.class_names, plan.parents_by_class())
    counts.add(labels, item_of, joint_table)
    confusion, calibration = counts.save(staging.part("graph_metric_confusion", index),
                                         staging.part("graph_metric_calibration", index))
    return {**staged, **{kind: str(path) for kind, path in paths.items()}, "metric_confusion": confusion,
            "metric_calibration": calibration}
