"""After the graph refinement: a partition's staged label rows, rewritten from its propagated posteriors, and its
review rows, with the neighbours' vote."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from prefect import task
from scipy import sparse

from pairwise_core.graph import vote_shares, with_votes
from pairwise_core.hierarchy import Level
from tasks.graph import VOTE_POWER, VOTE_PSEUDO_COUNT, staged_votes
from tasks.label import LABEL_SCHEMA, REVIEW_SCHEMA, agreeing_modalities, joint_rows, parent_columns, verdicts
from tasks.metric_counts import MetricCounts
from tasks.policy import IO_TASK
from tasks.sources import Plan
from tasks.staging import StagedArrays, Staging


@task(name="apply-graph", **IO_TASK)
def apply_graph(staged: dict[str, Any], posteriors: str, plan: Plan, staging: Staging, index: int,
                run_id: str) -> dict[str, Any]:
    """The partition's item_labels and joint_labels rows with the graph's refined and joint labels (the base
    and pairwise ones stay), their metric counts, and its review_items (``review_rows``); ``staged`` is what its
    label task returned, with these paths replaced."""
    parts, data = StagedArrays(staged["graph_parts"]), StagedArrays(posteriors)
    present, modalities = parts["present"], [str(m) for m in parts["modalities"]]
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
             "joint_labels": staging.part("graph_joint_labels", index),
             "review_items": staging.part("graph_review_items", index)}
    pq.write_table(labels, paths["item_labels"])
    pq.write_table(joint_table, paths["joint_labels"])
    reviewed = None if "review" not in parts else review_rows(
        pq.read_table(staged["review_items"]), ids, parts["review"], float(parts["keep_below"]),
        staged_votes(data, len(names)), refined, present, names, plan.parent)
    if reviewed is not None:
        pq.write_table(reviewed, paths["review_items"])
    else:  # no review: the pass's (empty) rows stay
        del paths["review_items"]
    counts = MetricCounts(plan.class_names, plan.parents_by_class())
    counts.add(labels, item_of, joint_table)
    confusion, calibration = counts.save(staging.part("graph_metric_confusion", index),
                                         staging.part("graph_metric_calibration", index))
    return {**staged, **{kind: str(path) for kind, path in paths.items()}, "metric_confusion": confusion,
            "metric_calibration": calibration}


def review_rows(reviews: pa.Table, ids: pa.Array, routes: np.ndarray, keep_below: float,
                votes: sparse.csr_matrix | None, refined: np.ndarray, present: np.ndarray, names: pa.Array,
                parent: Level | None) -> pa.Table:
    """The partition's review_items after the graph step, from every row the pass judged (``reviews``; their
    routes' log posteriors ``routes``, by the partition's row in ``ids``): where the route reads the given labels
    and the step has the neighbours' votes, they join it as one more expert (``with_votes``); the modalities
    that agree are counted against the graph's refined labels (``refined``, ``present``); the rows below the
    review's ``keep_below`` are kept."""
    row = pc.index_in(reviews.column("item_id"), value_set=ids).to_numpy(zero_copy_only=False)
    given = pc.index_in(reviews.column("given_label"), value_set=names).to_numpy(zero_copy_only=False)
    route_name = reviews.column("route")[0].as_py() if reviews.num_rows else "zero-shot"
    if votes is not None and route_name != "zero-shot":
        counts = votes[row].toarray()
        route = with_votes(routes[row], counts, power=VOTE_POWER, pseudo_count=VOTE_PSEUDO_COUNT)
        share = vote_shares(counts, VOTE_PSEUDO_COUNT)
        voted = counts.sum(axis=1) > 0
        changed = verdicts(route, given, refined[row], present[row], names, parent) | {
            "route": pa.repeat(pa.scalar(f"{route_name}+neighbours"), reviews.num_rows),
            "neighbours_p_given": pa.array(share[np.arange(len(row)), given]),
            "neighbours_label": names.take(pa.array(counts.argmax(axis=1), mask=~voted)),
        }
    else:  # the pass's verdicts; only the agreeing modalities are counted against the graph's labels
        suggested = pc.index_in(reviews.column("suggested_label"), value_set=names).to_numpy(zero_copy_only=False)
        changed = {"agreeing_modalities": agreeing_modalities(suggested, refined[row], present[row])}
    for column, values in changed.items():
        reviews = reviews.set_column(REVIEW_SCHEMA.get_field_index(column), column, values)
    if keep_below < 1:
        reviews = reviews.filter(pc.less(reviews.column("p_given"), keep_below))
    return reviews
