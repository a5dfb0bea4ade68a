"""One line per phase of a run, for the flow run's Logs tab in the Prefect UI.

What a person watching a run wants at a glance: how big the catalog is, how
fast each pass went, what the masks look like, how many rows were rejected
and why, and whether the pairwise and refined labels agree more than the
base ones. The lines are read from the plan and the run's staged files, so
nothing here changes what a run computes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pairwise_core.hierarchy import Level
from tasks.drift import CONSENSUS
from tasks.metrics import PARENT_SUFFIX
from tasks.model_retention import Removal
from tasks.night import Night
from tasks.refine import MIN_CALIBRATION_ROWS
from tasks.report import (DRIFT_METRICS, ClassReliability, calibration_words, drift_not_measured, labelled_kinds,
                          percent)
from tasks.sample import N_FOLDS
from tasks.sources import EMBEDDING_SUFFIX, Partition, Plan, first_few, quoted

if TYPE_CHECKING:  # run_retention words its reasons with ``count``
    from tasks.run_retention import RunRemoval

ARROW = "\u2192"


def count(n: float, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun, singular for one: "1 partition", "2 partitions", "1,200 items", "2.5 dims"."""
    shown = f"{int(n):,}" if float(n).is_integer() else f"{n:g}"
    return f"{shown} {noun if n == 1 else plural or noun + 's'}"


def catalog(plan: Plan, chunk_size: int) -> str:
    modalities = ", ".join(f"{m} ({plan.dims[m]}-d)" for m in plan.modalities)
    gold = f"gold column {plan.gold_column}" if plan.gold_column else "no gold column"
    return (f"Catalog: {count(plan.n_items, 'item')} in {count(len(plan.partitions), 'partition')} "
            f"(chunk size {chunk_size:,}), {count(len(plan.class_names), 'class', 'classes')}; "
            f"modalities {modalities}; {gold}")


def source_notes(plan: Plan) -> list[str]:
    """What the user should know of the sources before the run: the modalities left out, the parents, the gold
    column."""
    return modality_notes(plan) + parent_notes(plan.class_names, plan.parent) + gold_notes(plan)


def modality_notes(plan: Plan) -> list[str]:
    """The items' modalities that the classes have no embeddings for, and so the run leaves out: `pairwise classes`
    writes the modality text alone unless told others, and a catalog's image_embedding went unread, unsaid."""
    def said(modalities: tuple[str, ...]) -> tuple[str, str]:
        return (", ".join(f"{m}{EMBEDDING_SUFFIX}" for m in modalities),
                count(len(modalities), "modality", "modalities"))

    notes = []
    if plan.unmatched:
        columns, left_out = said(plan.unmatched)
        notes.append(f"The classes have no embeddings for the items' {columns}: {left_out} left out of this run "
                     "(`pairwise classes --modality NAME` writes a modality's class embeddings)")
    if plan.classes_unmatched:  # the other way round: the items lost a column the classes have
        columns, left_out = said(plan.classes_unmatched)
        notes.append(f"The items have no {columns}, which the classes have: {left_out} left out of this run")
    return notes


def gold_notes(plan: Plan) -> list[str]:
    """What the user should know of the gold column before the run: values that name no class, classes no value
    names (the label-aware review cannot suggest them), or no value at all."""
    gold = plan.gold
    if gold is None:
        return []
    if gold.n_labelled == 0:
        return [f"Gold column {plan.gold_column} has no values (all null or blank): no gold metrics and no review"]
    notes = []
    if gold.n_outside:
        spaced = [value for value in gold.outside_examples if value.strip() in plan.class_names]
        hint = f"; {quoted(spaced)} differ from a class name by surrounding spaces alone" if spaced else ""
        notes.append(f"Gold column {plan.gold_column} names no class in {gold.n_outside:,} of "
                     f"{count(gold.n_labelled, 'labelled item')} ({gold.n_outside / gold.n_labelled:.1%}; values "
                     f"such as {quoted(gold.outside_examples)}{hint}): " + outside_counted(plan))
    if unnamed := gold.unnamed_classes:
        notes.append(f"Gold column {plan.gold_column} never names {len(unnamed):,} of the "
                     f"{count(len(plan.class_names), 'class', 'classes')} ({first_few(unnamed, quoted)}): the "
                     "label-aware review cannot suggest them, so items of theirs under another label may look "
                     "right to it; --review zero-shot reads the embeddings alone")
    return notes


def parent_notes(class_names: Sequence[str], parent: Level | None) -> list[str]:
    """What the user should know of the parent level before the run: parent names that are classes under
    another parent (``Level.crossed_names``), which label and parent_label would use for two groups; and
    parent names that differ from another only in case ("animal" and "Animal": a typo in a names file of
    hundreds of lines splits a parent in two, and its items' parent labels, shares and metrics with it)."""
    if parent is None:
        return []
    notes = []
    if crossed := parent.crossed_names(class_names):
        shown = [f"{name} (a class under {above})" for name, above in crossed]
        notes.append(f"{count(len(crossed), 'parent name')} {'is' if len(crossed) == 1 else 'are'} also a class "
                     f"under another parent: {first_few(shown)}; label and parent_label then use one name for two "
                     "groups (a deeper taxonomy flattened?): rename one of them if that is not meant")
    folded: dict[str, list[str]] = {}
    for name in parent.names:
        folded.setdefault(name.casefold(), []).append(name)
    if cased := [quoted(names) for names in folded.values() if len(names) > 1]:
        notes.append(f"Parent names that differ only in case: {first_few(cased, '; '.join)}; they are separate "
                     "parents, each with its own children, shares and metrics: write them alike if that is not meant")
    return notes


def outside_counted(plan: Plan) -> str:
    """How the gold metrics and the review count the gold values that name no class. At the parent level (the
    *_parent methods) a value is compared as it is, so one that names a parent is right where the item's parent
    label is that parent: the warning said "wrong in the gold metrics" of values the parent level counted right."""
    if plan.parent is None:
        return "those items count as wrong in the gold metrics, and the review leaves them out"
    named = [value for value in plan.gold.outside_examples if value in set(plan.parent.names)]
    return ("those items count as wrong in the leaf level's gold metrics, and the review leaves them out; in the "
            "parent level's (methods *_parent) a value that names a parent"
            + (f", as {quoted(named)} {'does' if len(named) == 1 else 'do'}," if named else "")
            + " counts as right where the item's parent label is that parent, the others as wrong")


def too_few_labels(gold_column: str | None, n_modalities: int = 2) -> str:
    """Why a run asked to fit its confidence on the gold labels fitted it without them; with one modality it is
    not fitted at all ("fitted without labels" read as if it were): a fixed tempering (docs/tables.md)."""
    how = ("Confidence not fitted: with one modality it is a fixed tempering chosen on other catalogs, as"
           if n_modalities == 1 else "Confidence fitted without labels:")
    return (f"{how} gold column {gold_column} has too few labelled items to fit it on "
            f"(at least {MIN_CALIBRATION_ROWS:,} outside each of the seeded sample's {N_FOLDS} folds are needed)")


def partition_pass(name: str, partitions: Sequence[Partition], seconds: float, of: int,
                   share: str = "a seeded share") -> str:
    """``of``: partitions in the catalog, when the pass read ``share`` of them."""
    if not partitions:  # a night with nothing new or changed: no count and rate of nothing
        return f"{name}: no partition read ({share}: none of {count(of, 'partition')})"
    items = sum(p.n_rows for p in partitions)
    share = f" ({share} of {of})" if len(partitions) < of else ""
    return (f"{name}: {count(items, 'item')} in {count(len(partitions), 'partition')}{share}, {seconds:.2f} s "
            f"({items / max(seconds, 1e-9):,.0f} items/s)")


def masks(pair_masks_path: str, seconds: float) -> str:
    """Per modality: pairs, the median mask size (and its range), and the pairs that fell back to all dimensions."""
    table = pq.read_table(pair_masks_path, columns=["modality", "n_dims", "fallback"])
    parts = []
    for modality in dict.fromkeys(table.column("modality").to_pylist()):
        rows = table.filter(pc.equal(table.column("modality"), modality))
        dims = rows.column("n_dims").to_numpy()
        fallbacks = int(pc.sum(rows.column("fallback")).as_py() or 0)
        parts.append(f"{modality} {count(rows.num_rows, 'pair')}, median {count(float(np.median(dims)), 'dim')} "
                     f"({dims.min()}-{dims.max()}), {count(fallbacks, 'fallback')} to all dims")
    return f"Masks fitted in {seconds:.2f} s: " + "; ".join(parts)


def refinement(calibration: str, n_modalities: int, sample_rate: float, seconds: float,
               params: Mapping[str, Any] | None = None) -> str:
    """``params``: the run's gold column and --calibration, which say why one modality's confidence is fixed."""
    return (f"Refinement fitted in {seconds:.2f} s on a seeded sample ({sample_rate:.1%} of the rows read); "
            f"confidence {calibration_words(calibration, n_modalities, params)}")


def rejected(paths: Sequence[str]) -> str:
    """How many (item, modality) rows were rejected, by modality and reason."""
    tables = [pq.read_table(path, columns=["modality", "reason"]) for path in paths]
    table = pa.concat_tables(tables) if tables else None  # none: a night that read no partition
    if table is None or table.num_rows == 0:
        return "Rejected rows: none"
    counts = table.group_by(["modality", "reason"]).aggregate([([], "count_all")]).sort_by(
        [("count_all", "descending"), ("modality", "ascending"), ("reason", "ascending")])
    reasons = [f"{r['modality']} {r['count_all']:,} ({r['reason']})" for r in counts.to_pylist()]
    return f"Rejected rows (item, modality): {table.num_rows:,}: " + "; ".join(reasons)


def metrics(agreement_path: str | None) -> list[str]:
    """Agreement between modalities, then accuracy against gold when there is one: base -> pairwise -> refined.
    None: the run labelled no item (a night with nothing new), so nothing to measure."""
    if agreement_path is None:
        return []
    values: dict[tuple[str, bool, str, str], dict[str, float]] = {}
    for row in pq.read_table(agreement_path).to_pylist():
        method, parent = row["method"].removesuffix(PARENT_SUFFIX), row["method"].endswith(PARENT_SUFFIX)
        values.setdefault((row["metric"], parent, row["modality_a"], row["modality_b"]), {})[method] = row["value"]
    ordered = sorted(values.items(), key=lambda kv: (kv[0][2] == "joint", kv[0]))  # the joint label last
    lines = []
    for metric, title, label in (("agreement_f1_weighted", "Agreement (weighted F1)", "{a} vs {b}"),
                                 ("gold_accuracy", "Gold accuracy", "{a}")):
        for level in (False, True):
            shown = [f"{label.format(a=a, b=b)} {_steps(by_method)}" for (m, parent, a, b), by_method in ordered
                     if m == metric and parent == level]
            if shown:
                lines.append(f"{title}{' of the parents' if level else ''}, base {ARROW} pairwise {ARROW} refined: "
                             + "; ".join(shown))
    return lines


def _steps(by_method: Mapping[str, float]) -> str:
    if by_method.keys() == {"refined"}:  # the joint label: refined only
        return f"{by_method['refined']:.3f} (refined)"
    return f" {ARROW} ".join(f"{by_method[m]:.3f}" if m in by_method else "-" for m in ("base", "pairwise", "refined"))


def review_fit(details: Mapping[str, Any], seconds: float) -> str:
    """The route the review of the given labels takes (tasks/review.py), on how many sample rows."""
    weights = details.get("weights")
    shown = (f"; weights label-aware {weights['label_aware']:.2f}, zero-shot {weights['zero_shot']:.2f}"
             if weights else "")
    return (f"Review fitted in {seconds:.2f} s: route {details['route']} (asked: {details['requested']}) "
            f"on {count(details['sample_rows'], 'labelled sample row')}{shown}")


def review(gold_column: str | None, issue_paths: Sequence[str], seconds: float, keep_below: float) -> str:
    """How many labelled items were ranked, and how many of their given labels are more likely wrong than right."""
    if gold_column is None:
        return "Review: no gold column, no labels to review"
    p_given = pa.concat_arrays([pq.read_table(path, columns=["p_given"]).column(0).combine_chunks()
                                for path in issue_paths]) if issue_paths else pa.array([], pa.float64())
    doubtful = int(pc.sum(pc.less(p_given, 0.5)).as_py() or 0)
    kept = "every labelled item" if keep_below >= 1 else f"the labelled items with p_given < {keep_below:g}"
    return (f"Review: {count(len(p_given), 'item')} ranked by p_given in {seconds:.2f} s (annotation_issues keeps "
            f"{kept}); {count(doubtful, 'given label')} more likely wrong than right (p_given < 0.5)")


def drift(result: Mapping[str, Any]) -> list[str]:
    """One line per drift test of ``tasks.drift.measure_drift``'s result, and one for the tests not run."""
    lines = []
    for row in result["rows"]:
        sign, verdict = (">", "drifted") if row["drifted"] else ("<=", "no drift")
        rows = "labels" if row["modality"] == CONSENSUS else "rows"
        lines.append(f"Drift, {row['modality']}: {DRIFT_METRICS.get(row['metric'], row['metric'])} "
                     f"{row['value']:.3f} {sign} {row['threshold']:.3f} ({row['n_reference']:,} vs "
                     f"{row['n_current']:,} {rows}): {verdict}")
    if result["skipped"]:
        lines.append(drift_not_measured(result["skipped"]))
    return lines


def overconfident_classes(reliability: ClassReliability, shown: int = 3) -> str:
    """The classes whose joint labels are far more confident than right against gold, in one line: the Prefect UI's
    reader learns which labels a confidence threshold would let through wrong."""
    def drawn(row: Mapping[str, Any]) -> str:  # where its wrong labels' items mostly belong
        wrong = (row.get("wrong_gold") or [None])[0]
        if wrong is None:
            return ""
        return f"; gold when wrong mostly {wrong['gold_class']} ({percent(wrong['n'] / row['n_gold'])})"

    named = ", ".join(f"{row['class']} ({row['n_gold']:,} items with gold: "  # named classes have CLASS_MIN_GOLD+
                      f"{row['mean_confidence']:.2f} confident, {percent(row['gold_accuracy'])} right{drawn(row)})"
                      for row in reliability.over[:shown])
    more = len(reliability.over) - shown
    classes = count(len(reliability.over), "class", "classes")
    return (f"Joint labels far more confident than right against gold in {classes}: {named}"
            + (f", and {more} more" if more > 0 else "")
            + "; a confidence threshold lets their errors through (the report lists them)")


def html_report(path: Path) -> str:
    return f"HTML report: {path.resolve()}"


def finished(run_id: str, laps: Mapping[str, float], total: float) -> str:
    phases = ", ".join(f"{name.removesuffix('_s')} {seconds:.2f} s" for name, seconds in laps.items())
    return f"Run {run_id} committed in {total:.1f} s: {phases}"


def rerun(run_id: str) -> str:
    """A run id that had succeeded, run again: what a system syncing from label_changes must know."""
    return (f"Run {run_id} had succeeded: this attempt replaces its rows, and its label_changes then say what "
            "changed since before its first attempt; a system that synced that attempt resyncs from catalog_labels "
            "(docs/operations.md)")


def first_night(db: str) -> str:
    return f"No stored model in {db} yet: this night fits one on the whole catalog (a full run)"


def night_plan(night: Night) -> str:
    """What an incremental night found from the items' ids alone."""
    changed = "" if night.n_changed is None else f", {count(night.n_changed, 'changed item')}"
    if night.n_unversioned:
        changed += f", {count(night.n_unversioned, 'item')} without a version (checked by fingerprint)"
    return (f"Incremental night: {count(night.n_source, 'item')} in the source, {count(night.n_new, 'new item')}"
            f"{changed}, {count(night.n_deleted, 'deleted item')}; reading {count(len(night.partitions), 'partition')}")


def changes(counted: Mapping[str, Mapping[str, int]]) -> str:
    """The run's label_changes, by change and cause."""
    if not counted:
        return "Label changes: none"
    shown = [f"{n:,} {change} ({cause.replace('_', ' ')})"
             for change, causes in counted.items() for cause, n in causes.items()]
    return "Label changes: " + ", ".join(shown)


def night_labelled(details: Mapping[str, int]) -> str:
    """What an incremental night labelled, once its partitions were read (Night.details)."""
    return (f"Incremental night: labelled {count(details['labelled'], 'item')} ({labelled_kinds(details)}), "
            f"carried {details['carried_over']:,} over unchanged")


def refit_on_drift(refit_id: str) -> str:
    return f"The night drifted from the model's fit sample (--refit-on-drift): refitting on the whole catalog as run {refit_id}"


def models_removed(removal: Removal, keep: int) -> list[str]:
    """What a run's ``keep_models`` removed: nothing said when there was nothing to remove."""
    lines = [f"Removed stored model {row['model_id']} (run {row['run_id']}, {removal.sizes[row['model_id']] / 1e6:,.1f}"
             f" MB): keep_models {keep}" for row in removal.removed]
    return lines + [f"Kept stored model {row['model_id']} past keep_models {keep}: it still labels "
                    f"{count(row['n_live'], 'live item')}" for row in removal.still_live]


def runs_removed(removal: RunRemoval, keep: int) -> list[str]:
    """What a run's ``keep_runs`` removed: nothing said when there was nothing to remove."""
    lines = [f"Removed run {row['run_id']} ({row['status']}, started {row['started_at']:%Y-%m-%d %H:%M}): keep_runs "
             f"{keep}" for row in removal.removed]
    return lines + [f"Kept run {row['run_id']} past keep_runs {keep}: {why}" for row, why in removal.stayed]


def model_folder_stuck(folder: Path) -> str:
    return f"Could not delete {folder} (its model's row is removed; the next run deletes it once it can)"


def graph(details: dict[str, Any]) -> str:
    """What the graph refinement did, in one line."""
    if "skipped" in details:
        return f"Graph refinement skipped: {details['skipped']}"
    reference = details.get("reference", details["items"])
    outside = (f"; the other {details['items'] - reference:,} items one step each against their k nearest of them "
               f"(search {details['outside_search_s']:.1f} s)") if reference < details["items"] else ""
    return (f"Graph refinement: {count(reference, 'item')}, k = {details['k']} ({details['index']}, recall "
            f"{details['recall']:.3f} against exact search on {details['recall_queries']:,} items), propagated "
            f"{details['iterations']} times at alpha {details['alpha']}{outside}: build {details['build_s']:.1f} s, "
            f"search {details['search_s']:.1f} s, in all {details['total_s'] + details['apply_s']:.1f} s")


def graph_inductive(details: dict[str, Any]) -> str:
    """What an incremental night's graph step did, in one line."""
    return (f"Graph refinement, inductive: {count(details['items'], 'item')}, each against its k = {details['k']} "
            f"nearest of the model's {details['stored_items']:,} stored items ({details['neighbours']:,} neighbours "
            f"found), one step at alpha {details['alpha']}: load {details['load_s']:.1f} s, search "
            f"{details['search_s']:.1f} s, in all {details['total_s'] + details['apply_s']:.1f} s")


def graph_followed(model_id: str, k: int) -> str:
    return (f"Graph refinement: k = {k}, as model {model_id} was fitted (no --graph-k given; --graph-k 0 labels "
            "without the graph)")


def graph_not_used(model_id: str, k: int | None) -> str:
    fitted = "with the graph refinement" if k is None else f"with the graph refinement (k = {k})"
    return (f"Graph refinement off (--graph-k 0): model {model_id} was fitted {fitted}, and this run labels without "
            "it; its labels can differ from those the graph gave")


def graph_other_k(model_id: str, model_k: int | None, k: int) -> str:
    """A --graph-k other than the model's, or given for a model that does not record its k (None: stored
    without a neighbourhood, and the run that fitted it gone or silent)."""
    fitted = "with the graph refinement and does not record its k" if model_k is None else f"with k = {model_k}"
    return f"Graph refinement: k = {k} as given; model {model_id} was fitted {fitted}"


def graph_skipped() -> str:
    return ("Graph refinement skipped: the model stores no neighbourhood for an incremental night's inductive step "
            "(fitted before it was stored); its new and changed items are labelled without the graph, a full run "
            "with the model applies it")
