"""The agreement report of a run, as Markdown tables (they read well in a terminal too)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from pairwise_core.drift import AUC_METRIC, SHARE_METRIC
from pairwise_core.refine import COLLAPSED, SWELL
from tasks import store


# Markdown's characters for code, emphasis, links, HTML and table cells, and its escape itself
_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\`*[]<>|"})


def md_text(text: str) -> str:
    """Data (class names, item ids, labels) as Markdown text that shows as written, on a terminal and in the
    Prefect UI: a name could break a table's columns or rows, carry a link or an image the UI would render,
    or move the terminal's cursor. Markdown's characters are backslash-escaped; characters that print as
    nothing or move the cursor (escape sequences, newlines) are written as \\uXXXX, as in messages."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text.translate(_MARKDOWN))


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"  # counts, as the report's other counts and the HTML report's are written
    return md_text(str(value))


def markdown_table(table: pa.Table, headers: list[str] | None = None) -> str:
    rows = [[_fmt(v) for v in row.values()] for row in table.to_pylist()]
    headers = [md_text(header) for header in headers or table.column_names]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def latest_run_id(db: str | Path, *, succeeded: bool = False) -> str | None:
    """The latest run, or the latest succeeded one (a run still running or failed has no figures)."""
    table = store.query(db, "report_latest_succeeded_run" if succeeded else "report_latest_run")
    return table.column("run_id")[0].as_py() if table.num_rows else None


def shown_classes(candidates: Iterable[str], items: Mapping[str, int], limit: int) -> tuple[list[str], int]:
    """The ``limit`` classes with the most items, by name, and how many were left out (the least common)."""
    ranked = sorted(set(candidates), key=lambda c: (-items.get(c, 0), c))
    return sorted(ranked[:limit]), max(0, len(ranked) - limit)


def run_row(db: str | Path, run_id: str) -> dict:
    """The run's row of `runs`, or a one-line ValueError naming the latest run and where the others are."""
    runs = store.query(db, "report_run", {"run_id": run_id}).to_pylist()
    if not runs:
        latest = latest_run_id(db)
        listed = f" (the latest is {latest}; `pairwise runs --db {db}` lists them all)" if latest else " (no runs yet)"
        raise ValueError(f"no run {run_id!r} in {db}{listed}")
    return runs[0]


def graph_line(details: str | None) -> str | None:
    """The graph refinement's settings and recall, when the run asked for it: its refined labels come from it."""
    graph = json.loads(details).get("graph") if details else None
    if not graph:
        return None
    if "skipped" in graph:
        return f"- graph refinement (k {graph['k']}): skipped, {graph['skipped']}"
    if graph.get("inductive"):
        return (f"- graph refinement, inductive: {graph['items']:,} items each took one step against its "
                f"{graph['k']} nearest of the model's {graph['stored_items']:,} stored items")
    reference = graph.get("reference", graph["items"])  # a run before the bounded graph: every item
    outside = (f"; the other {graph['items'] - reference:,} items each took one step against its "
               f"{graph['k']} nearest of them") if reference < graph["items"] else ""
    return (f"- graph refinement: refined and joint labels propagated over a "
            f"{graph.get('k_used', graph['k'])}-nearest-neighbour graph "
            f"of {reference:,} items (recall {graph['recall']:.3f}, calibration {graph['calibration']}){outside}")


def fit_line(db: str | Path, run: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The fit's strategy, cutoff and seed: the run's own, or for a run with a stored model (--model) its model's,
    which it labelled with (a night's report gave its own defaults, seed 0 under a model fitted with seed 3)."""
    fit: Mapping[str, Any] = params
    if params.get("model") and run["model_id"]:
        stored = store.query(db, "model_row", {"model_id": run["model_id"]}).to_pylist()
        if not stored:
            return f"- stored model {run['model_id']} (removed since)"
        fit = json.loads(stored[0]["params"])["core"]
    shown = ", ".join(f"{name} {'-' if fit.get(name) is None else fit[name]}" for name in ("strategy", "cutoff", "seed"))
    return f"- stored model {run['model_id']}: {shown}, as it was fitted" if fit is not params else f"- {shown}"


def render_report(db: str | Path, run_id: str) -> str:
    """Run summary, base / pairwise / refined metrics, class distribution, consensus and the top label issues."""
    run = run_row(db, run_id)
    params = json.loads(run["params"])
    lines = [
        f"# Run {run_id}: {run['status']}",
        "",
        f"- items: {_fmt(run['n_items'])}, classes: {_fmt(run['n_classes'])}, "
        f"modalities: {md_text(', '.join(run['modalities'] or [])) or '-'}",
        fit_line(db, run, params),
        f"- started {run['started_at']:%Y-%m-%d %H:%M:%S %Z}, finished "
        + (f"{run['finished_at']:%Y-%m-%d %H:%M:%S %Z}" if run["finished_at"] else "-"),
    ]
    if run["error"]:
        lines.append(f"- error: {md_text(run['error'])}")
    if run["status"] != "succeeded":
        return "\n".join(lines)
    if line := graph_line(run["details"]):
        lines.append(line)
    lines += ["", "## What changed (label_changes)", "", *changes_lines(db, run_id, run)]
    scope_line = night_scope(run["details"])
    scope = [scope_line, ""] if scope_line else []  # under each heading of what the night labelled
    metrics = store.query(db, "report_metrics", {"run_id": run_id}).to_pylist()
    lines += ["", "## Agreement and accuracy: base, pairwise, refined", "", *scope,
              _metrics_table(metrics, len(run["modalities"] or []), params)]
    if any(r["refined"] is not None for r in metrics):
        lines += ["", metrics_note(metrics)]
    shares = store.query(db, "report_class_distribution", {"run_id": run_id}).to_pylist()
    lines += ["", "## Class shares", "", *scope, _shares_table(shares, n_classes=run["n_classes"])]
    parents = store.query(db, "report_parent_shares", {"run_id": run_id}).to_pylist()
    if parents:
        lines += ["", "## Parent shares (consensus_labels.parent_label)", "", *scope,
                  _parent_shares_table(parents, n_parents=n_parents(run["details"])), "",
                  parent_shares_note(run["details"])]
        if line := parent_confidence_line(db, run_id, run["details"]):
            lines += ["", line]
    kept = stability_scope(run["details"])
    lines += ["", "## One label per item (consensus_labels)", "", *scope, *([kept, ""] if kept else []),
              *_consensus_lines(db, run_id, run["details"], len(run["modalities"] or []), params)]
    rejected, sentence = rejected_rows(db, run_id)
    if rejected:
        lines += ["", "## Rejected rows (rejected_items)", "", sentence, "", markdown_table(pa.table({
            "modality": [r["modality"] for r in rejected], "reason": [r["reason"] for r in rejected],
            "rows": [f"{r['n_rows']:,}" for r in rejected]}))]
    drift = store.query(db, "report_drift", {"run_id": run_id}).to_pylist()
    paragraphs = [_drift_table(drift), DRIFT_NOTE] if drift else []
    if skipped := drift_skipped(run["details"]):
        paragraphs.append(skipped)
    if paragraphs:
        lines += ["", "## Drift against the model's fit sample (drift_metrics)", "", "\n\n".join(paragraphs)]
    issues = store.query(db, "report_annotation_issues", {"run_id": run_id, "limit": 5}).to_pylist()
    if issues:
        lines += ["", f"## Labels worth a look: top {len(issues)} of {issues[0]['n_issues']:,} (annotation_issues)", "",
                  *scope, *_issues_lines(issues)]
    return "\n".join(lines)


CHANGE_CAUSES = {"new_item": "new in the source", "embedding_changed": "its embeddings changed",
                 "refit": "same embeddings, a new model", "parents": "same embeddings and model, other parents",
                 "neighbours": "same embeddings and model, moved by the graph", "removed": "gone from the source"}


NO_CHANGES = "No consensus label appeared, changed or went away."
UNRECORDED_CHANGES = "Not recorded: the run predates label_changes (schema version 6)."


def no_changes(details: str | None) -> str:
    """What to say when a run has no label_changes rows: none changed, or none were recorded (the commit writes
    the counts of its changes into runs.details since label_changes exists)."""
    return NO_CHANGES if "changes" in json.loads(details or "{}") else UNRECORDED_CHANGES


def labelled_kinds(details: Mapping[str, int]) -> str:
    """What a night labelled (runs.details.night), for the log and the report: new and changed, and how many
    items it checked by their fingerprint for want of a recorded version (a run without --changed-column
    records none)."""
    unversioned = details.get("unversioned", 0)
    return (f"{details['new']:,} new, {details['changed']:,} changed"
            + (f"; {unversioned:,} without a version, checked by fingerprint" if unversioned else ""))


def change_sentences(details: str | None, succeeded_attempts: int = 1) -> list[str]:
    """An incremental night's counts (runs.details.night), and how many items a refit's stability kept: what
    label_changes does not show (a kept item has no row, and keeps a label the new model would not give).
    A re-run of a run that had succeeded (``succeeded_attempts`` > 1) says what its label_changes compare: the
    catalog before its first attempt, while a night's counts are against the catalog that attempt left (a
    night re-run with 5 more items gone said "5 deleted" over label_changes' 10). The night's deleted items are
    those gone from the source, and say so: label_changes' deleted rows also count the items whose every
    modality is now rejected ("10 deleted" over a table of 11 deleted rows)."""
    found = json.loads(details or "{}")
    sentences = []
    night = found.get("night")
    if night:
        sentences.append(f"Incremental night: {night['source']:,} items in the source; labelled "
                         f"{night['labelled']:,} ({labelled_kinds(night)}), {night['deleted']:,} gone from the source, "
                         f"{night['carried_over']:,} carried over unchanged.")
    if succeeded_attempts > 1:
        sentences.append("This run id had succeeded before: its label_changes say what changed since before its "
                         "first attempt" + (", while the night's counts are against the catalog its earlier "
                                            "attempt left" if night else "") + ".")
    if (stability := found.get("stability")) and stability["kept"]:
        sentences.append(f"Refit stability ({stability['at']}): {stability['kept']:,} unchanged items kept their "
                         "label from the model before, which the new model would have changed with a confidence "
                         "below it; their rows in catalog_labels name the model before.")
    return sentences


def stability_scope(details: str | None) -> str | None:
    """What a refit's consensus labels are where its stability kept items (runs.details.stability): the new
    model's labels of every item, while catalog_labels keeps the earlier label of the kept ones; None when it
    kept none."""
    stability = json.loads(details or "{}").get("stability")
    if not stability or not stability["kept"]:
        return None
    return (f"These are the new model's labels of every item: for {stability['kept']:,} of them refit stability "
            f"({stability['at']}) kept their earlier label, and catalog_labels, the catalog's labels now, has that "
            "one.")


def night_scope(details: str | None) -> str | None:
    """Which items a night's figures count: it labelled its new and changed items only, while the report's
    header counts the whole catalog (runs.n_items); None for a run that labelled every item, or none."""
    night = json.loads(details or "{}").get("night")
    if not night or not night["labelled"]:
        return None
    return (f"These figures count the {night['labelled']:,} items this night labelled (new or changed), not the "
            f"catalog's {night['source']:,}: the catalog's labels now are in catalog_labels.")


def change_rows(db: str | Path, run_id: str) -> list[list[Any]]:
    """The run's label_changes counted: change, cause (in words), items."""
    return [[r["change"], CHANGE_CAUSES[r["cause"]], r["n"]]
            for r in store.query(db, "run_label_changes", {"run_id": run_id}).to_pylist()]


def changes_lines(db: str | Path, run_id: str, run: Mapping[str, Any]) -> list[str]:
    """What the run did to the catalog's labels: an incremental night's counts, then label_changes by cause."""
    details = run["details"]
    lines = [line for sentence in change_sentences(details, run["succeeded_attempts"]) for line in (sentence, "")]
    counted = change_rows(db, run_id)
    if not counted:
        return [*lines, no_changes(details)]
    return [*lines, markdown_table(pa.table(dict(zip(CHANGE_HEADERS, map(list, zip(*counted))))))]


CHANGE_HEADERS = ["change", "cause", "items"]


METRICS_NOTE = ("joint: one label per item from all its modalities (refined only); gold_ece: calibration error "
                "of the refined confidence against gold, lower is better.")
PARENT_METRICS_NOTE = ("parent: the same for the classes' parents (base, pairwise: the leaf label's parent; refined: "
                       "the parent whose children's probabilities sum highest).")


def metrics_note(rows: list[dict]) -> str:
    """The metrics table's note, with the parent level's only when the table has parent rows."""
    return METRICS_NOTE + (f" {PARENT_METRICS_NOTE}" if any(r["level"] == "parent" for r in rows) else "")
# What each consensus_labels status means; the last three only in runs made before schema version 3.
CONSENSUS_STATUSES = {
    "agreed": "every modality of the item (two or more) gives its label",
    "split": "the modalities' own refined labels differ: the joint posterior decided",
    "single_modality": "only one modality labelled the item: its others were rejected",
    "majority": "older run: more modalities give this label than any other",
    "by_margin": "older run: a tie in votes, broken by the larger normalized pairwise margin",
    "undecided": "older run: a tie in votes and in margin, no label",
}
ONE_MODALITY = "the run has one modality: its refined label is the item's label"


def status_meaning(status: str, n_modalities: int) -> str:
    """What a consensus status means in a run of ``n_modalities``: with one, every item is single_modality
    and none was rejected for it."""
    if status == "single_modality" and n_modalities == 1:
        return ONE_MODALITY
    return CONSENSUS_STATUSES.get(status, "")


CALIBRATIONS = {"gold": "fitted out of fold on the gold column", "label-free": "fitted without labels"}
# label-free with one modality: no other modality to fit the weight against (pairwise_core/joint.py)
FIXED_CONFIDENCE = ("not fitted to this catalog: with one modality and no gold column to fit it on, it is a fixed "
                    "tempering chosen on other catalogs (docs/tables.md, One label per item)")


def fixed_confidence(params: Mapping[str, Any]) -> str:
    """FIXED_CONFIDENCE, with why there was nothing to fit it on: a run with a gold column read "no gold column"
    when its labels were too few, or --calibration label-free set them aside."""
    if params.get("model"):  # a night: its model's full run fitted (or not) on its own items
        return FIXED_CONFIDENCE.replace("no gold column to fit it on", "its model fitted without gold labels")
    column = params.get("gold_column")
    if not column:
        return FIXED_CONFIDENCE
    why = ("--calibration label-free" if params.get("calibration") == "label-free"
           else f"too few labelled items in gold column {column} to fit it on")
    return FIXED_CONFIDENCE.replace("no gold column to fit it on", why)


def calibration_words(calibration: str, n_modalities: int, params: Mapping[str, Any] | None = None) -> str:
    """How the confidence was fitted; a run with a stored model (--model) fitted nothing itself: its model's
    full run did, on that run's items. With one modality and no gold labels nothing is fitted: "fitted without
    labels" read as if it were, where README and tables.md warn that a threshold may then accept nothing."""
    if calibration == "label-free" and n_modalities == 1:
        return fixed_confidence(params or {})
    words = CALIBRATIONS.get(calibration, calibration)
    return f"{words} when its model was fitted" if params and params.get("model") else words
# runs.details.parent_confidence in words (flows/reclassify.py parent_confidence)
PARENT_CONFIDENCES = {
    "calibrated": "that sum calibrated on the gold column's parents (sharpened by a power fitted out of fold)",
    "sum": "that sum, not calibrated",
}
UNRECORDED_PARENT_CONFIDENCE = ("that sum, calibrated on the gold column's parents where the run's model had powers "
                                "for them (the run did not record whether it had)")


def parent_shares_note(details: str | None) -> str:
    """What the parent shares' confidence is, as the run recorded it; for a run from before the record, as far
    as its calibration and graph step tell: a label-free or propagated one is the plain sum."""
    recorded = json.loads(details) if details else {}
    how = recorded.get("parent_confidence")
    graph = recorded.get("graph")
    if how is None and (recorded.get("calibration") != "gold" or (graph and "skipped" not in graph)):
        how = "sum"
    return ("consensus_labels.parent_label: the parent whose children's joint probabilities sum highest; its "
            f"confidence is {PARENT_CONFIDENCES.get(how, UNRECORDED_PARENT_CONFIDENCE)}.")

# drift_metrics.metric in words (pairwise_core/drift.py)
DRIFT_METRICS = {AUC_METRIC: "domain-classifier AUC", SHARE_METRIC: "class-share JS distance"}
DRIFT_NOTE = ("Drifted: value > threshold. domain-classifier AUC, per modality: how well a classifier tells the "
              "run's rows from the model's fit sample (0.5: not at all; 1: always). class-share JS distance, "
              "consensus: between the class shares of the run's consensus labels and the fit sample's (0: the "
              "same). Thresholds are at least the no-drift 99.9% quantile at these sample sizes.")


def drift_not_measured(skipped: str) -> str:
    """The drift tests a night did not run, and why (tasks.drift.measure_drift's ``skipped``)."""
    return f"Drift not measured: {skipped}"


def drift_skipped(details: str | None) -> str | None:
    """The drift tests a night did not run, and why (runs.details.drift), as its log said: a night too small for
    them, or without scikit-learn, would have shown no drift at all; None when it ran every one, or is no night."""
    drift = json.loads(details or "{}").get("drift")
    return drift_not_measured(drift["skipped"]) if drift and drift["skipped"] else None


def drift_cells(row: Mapping[str, Any]) -> list[Any]:
    """A drift_metrics row as the reports show it: the metric in words, drifted as yes / no."""
    return [row["modality"], DRIFT_METRICS.get(row["metric"], row["metric"]), row["value"], row["threshold"],
            "yes" if row["drifted"] else "no", f"{row['n_reference']:,}", f"{row['n_current']:,}"]


DRIFT_HEADERS = ["modality", "metric", "value", "threshold", "drifted", "reference rows", "run rows"]


def _drift_table(rows: list[dict]) -> str:
    cells = [drift_cells(r) for r in rows]
    return markdown_table(pa.table({h: [_fmt(row[i]) for row in cells] for i, h in enumerate(DRIFT_HEADERS)}))


# The top issues of a run of schema version 4 on: column -> (terminal header, HTML header). Each route's own
# p_given and most likely label are its evidence.
ISSUE_COLUMNS = {
    "rank": ("rank", "rank"), "item_id": ("item_id", "item"), "given_label": ("given", "given label"),
    "suggested_label": ("suggested", "suggested label"), "p_given": ("p_given", "p_given"),
    "route": ("route", "route"), "zero_shot_p_given": ("zs p_given", "zero-shot p_given"),
    "zero_shot_label": ("zs label", "zero-shot label"), "label_aware_p_given": ("la p_given", "label-aware p_given"),
    "label_aware_label": ("la label", "label-aware label"), "agreeing_modalities": ("agree", "agreeing modalities"),
}
PROBABILITIES = {"p_given", "p_given_parent", "zero_shot_p_given", "label_aware_p_given", "neighbours_p_given"}
ISSUES_NOTE = ("p_given: the probability that the given label is right, from the run's route. Route zero-shot "
               "(zs): the refined joint posterior, which never reads the labels; "
               "label-aware (la): an out-of-fold discriminant fitted on the given labels (none on the zero-shot "
               "route); both: the two together. Each route shows its own p_given and most likely label; agreeing "
               "modalities (agree): how many modalities' refined labels are the suggested one.")
# Without a parent level the rank is p_given's order; with one it is not (rank 1 may have a higher p_given than
# rank 2), so each note says what the rank orders by.
RANK_NOTE = "Rank 1 has the lowest p_given."
PARENT_ISSUES_NOTE = ("p_parent: the probability that the given label's parent is right (its children's summed); "
                      "a wrong parent is the worse error, so the rank orders by p_given^0.75 * p_parent^0.25.")
NEIGHBOURS_ISSUES_NOTE = ("+neighbours (nb): the graph's (--graph-k) vote joins the route: the given labels of the "
                          "item's neighbours, weighted by the graph's edges; nb p_given is the given label's share of "
                          "it, nb label the label most of that weight carries.")
OLD_ISSUES_NOTE = ("Scored by the schema-3 rules (a run made before schema version 4, with no p_given): score is "
                   "the share of modalities whose pairwise label is not the given one plus how far the given label "
                   "trails in base cosine, standardized among the items given the same label; agreeing modalities: "
                   "how many pairwise labels are the suggested one.")


def probability(value: float | None) -> str | None:
    """Three decimals, or two significant digits below 0.001: the top issues are the near-zero ones."""
    if value is None:
        return None
    return f"{value:.3f}" if value >= 0.001 or value == 0 else f"{value:.1e}"


def issue_columns(issues: list[Mapping[str, Any]]) -> tuple[dict[str, tuple[str, str]], str]:
    """The columns of a run's top issues and their note: ISSUE_COLUMNS; p_given_parent after p_given when the
    run's classes have parents (schema version 8 on); the neighbours' vote after the agreeing modalities when
    the review weighed it in (schema version 9 on)."""
    columns, note = list(ISSUE_COLUMNS.items()), ISSUES_NOTE
    if any(issue.get("p_given_parent") is not None for issue in issues):
        at = list(ISSUE_COLUMNS).index("p_given") + 1
        columns = [*columns[:at], ("p_given_parent", ("p_parent", "parent p_given")), *columns[at:]]
        note = f"{note} {PARENT_ISSUES_NOTE}"
    else:
        note = f"{note} {RANK_NOTE}"
    if any(issue.get("neighbours_p_given") is not None for issue in issues):
        columns += [("neighbours_p_given", ("nb p_given", "neighbours' p_given")),
                    ("neighbours_label", ("nb label", "neighbours' label"))]
        note = f"{note} {NEIGHBOURS_ISSUES_NOTE}"
    return dict(columns), note


def issue_cells(issue: Mapping[str, Any], columns: Mapping[str, Any] = ISSUE_COLUMNS) -> list[Any]:
    """An issue's ``columns``, its probabilities formatted to tell the near-zero ones apart."""
    return [probability(issue[k]) if k in PROBABILITIES else issue[k] for k in columns]


def _issues_lines(issues: list[dict]) -> list[str]:
    """The top issues with each route's evidence; a run from before schema version 4 keeps its score."""
    if issues[0]["p_given"] is None:
        columns = ["rank", "item_id", "given_label", "suggested_label", "score", "agreeing_modalities"]
        rows, note, headers = [[r[c] for c in columns] for r in issues], OLD_ISSUES_NOTE, columns
    else:
        columns, note = issue_columns(issues)
        rows = [issue_cells(r, columns) for r in issues]
        headers = [terminal for terminal, _ in columns.values()]
    table = pa.table({h: [row[i] for row in rows] for i, h in enumerate(headers)})  # markdown_table formats them
    return [markdown_table(table), "", note]


def signed(value: float | None) -> str | None:
    """A difference with its sign, so a loss is seen at a glance."""
    return None if value is None else f"{round(value, 3) or 0.0:+.3f}"  # no "-0.000" for a tiny loss


def metric_cell(row: Mapping[str, Any]) -> str:
    """The metric's name, marked when it is of the classes' parents (methods *_parent)."""
    return f"parent {row['metric']}" if row["level"] == "parent" else row["metric"]


def no_metrics(n_modalities: int, params: Mapping[str, Any]) -> str:
    """Why a run has no metrics: with one modality and no gold value there is nothing to compare, and a bare
    "No metrics for this run." under the heading "Agreement and accuracy" left a one-modality user asking why."""
    if n_modalities != 1:
        return "No metrics for this run."
    hint = "" if params.get("gold_column") else " (--gold-column names one)"
    return (f"No metrics for this run: agreement compares two modalities and this run has one; accuracy needs "
            f"gold labels. {no_gold(params)}{hint}.")


def _metrics_table(rows: list[dict], n_modalities: int = 2, params: Mapping[str, Any] | None = None) -> str:
    """Both gains, under short headers: the report is printed after every run and must stay narrow."""
    if not rows:  # one modality and no gold column: nothing to compare
        return no_metrics(n_modalities, params or {})
    table = pa.table({
        "metric": [metric_cell(r) for r in rows],
        "modality": [r["modality_a"] for r in rows],
        "vs": [r["modality_b"] for r in rows],
        **{method: pa.array([r[method] for r in rows], pa.float64()) for method in ("base", "pairwise", "refined")},
        "pw-base": [signed(r["pairwise_minus_base"]) for r in rows],
        "ref-pw": [signed(r["refined_minus_pairwise"]) for r in rows],
    })
    return markdown_table(table)


def percent(value: float) -> str:
    """A share to one decimal, but 0.0% and 100.0% only when it is exactly that: 3 single-modality items of
    7,988 read 0.0%, as if there were none, and 7,986 of 7,988 items at confidence 0.9 or more read 100.0%.
    In words, not < and >, which the Markdown tables escape (a terminal showed \\<0.1%)."""
    text = f"{value:.1%}"
    if text == "0.0%" and value > 0:
        return "under 0.1%"
    if text == "100.0%" and value < 1:
        return "over 99.9%"
    return text


def _percent(value: float | None) -> str:
    return "-" if value is None else percent(value)


def no_gold(params: Mapping[str, Any]) -> str:
    """Why a run has nothing to check against gold: it had no gold column, or had one (runs.params gold_column)
    without a value among the items it labelled, as a night of new, unlabelled items has."""
    column = params.get("gold_column")
    return (f"No gold value in this run (its gold column {column} has none among the items it labelled)"
            if column else "No gold column in this run")


BANDS = ("≥ 0.9", "0.5–0.9", "< 0.5")


def parent_confidence_line(db: str | Path, run_id: str, details: str | None) -> str | None:
    """One line: the share of joint parent labels in each confidence band, and with gold values how often they
    are right against the gold class's parent (a gold value that names no class is its own parent, as
    refined_parent counts it); None without parents. The parent level is the one a business often acts on, and
    its bands differ from the leaf's: on taxonomy-nouns 18.4% of the parent labels are at 0.9 or more, 92.4% of
    them right, against 1.1% of the leaf labels."""
    parents = json.loads(details or "{}").get("parents")
    rows = store.query(db, "report_parent_confidence", {"run_id": run_id}).to_pylist() if parents else []
    if not rows:
        return None
    items, labelled, right = Counter(), Counter(), Counter()
    for row in rows:
        items[row["band"]] += row["n"]
        if row["gold"] is not None:
            labelled[row["band"]] += row["n"]
            right[row["band"]] += row["n"] if parents.get(row["gold"], row["gold"]) == row["pred"] else 0
    total, gold = sum(items.values()), bool(labelled)
    parts = [f"{band}: {percent(items[band] / total)}"
             + (f", {right_in_band(right[band] / labelled[band] if labelled[band] else None)}" if gold else "")
             for band in BANDS if items[band]]
    return "Parent confidence " + "; ".join(parts) + (" (against the gold class's parent)" if gold else "") + "."


def collapsed_fits(fits: Mapping[str, Mapping[str, Any]] | None) -> list[str]:
    """A line per modality whose mixture collapsed and was fitted again at a higher temperature
    (``pairwise_core.refine.fit_without_collapse``)."""
    lines = []
    for modality, fit in (fits or {}).items():
        shares = fit["swollen_shares"]
        if len(shares) > 1:
            outcome = (f"refitted at temperature {fit['temperature']:g}, where {shares[-1]:.1%} are in swollen classes"
                       if shares[-1] <= COLLAPSED else
                       f"still {shares[-1]:.1%} in swollen classes at temperature {fit['temperature']:g}, the highest "
                       "tried")
            lines.append(f"Refinement of {modality}: its mixture collapsed ({shares[0]:.1%} of the sample's refined "
                         f"labels in classes swollen past {SWELL:g}x their pairwise count); {outcome}")
    return lines


def right_in_band(share: float | None) -> str:
    """How often a band's labels are right; a band with no gold-labelled item said "- right"."""
    return "none with a gold label" if share is None else f"{percent(share)} right"


def confidence_summary(bands: list[dict], calibration: str | None, n_modalities: int,
                       params: Mapping[str, Any]) -> str:
    """One line: the share of joint labels in each confidence band, and how often they are right; with a gold
    column without values, that they cannot be checked (the calibration alone reads as if they were)."""
    gold = any(b["gold_accuracy"] is not None for b in bands)
    parts = [f"{b['band']}: {_percent(b['share'])}" + (f", {right_in_band(b['gold_accuracy'])}" if gold else "")
             for b in bands]
    return ("Joint confidence " + "; ".join(parts) + (" (against gold)" if gold else "") + "."
            + (f" Confidence {calibration_words(calibration, n_modalities, params)}." if calibration else "")
            + (f" {no_gold(params)}: the confidence cannot be checked." if params.get("gold_column") and not gold
               else ""))


# A class of the joint label is named as more confident than right when it has this many gold-labelled items, its
# mean confidence exceeds its share right by at least the gap, and by at least this many standard errors of a
# calibrated class (mean confidence c over n items: at most sqrt(c (1 - c) / n)), so that sampling alone would
# name about one class in 750. On the WordNet nouns (24 classes, joint ECE 0.022) 8 classes were named, 'artifact'
# 47% confident and 9% right, and 7 were right far more often than confident: the two balance in the ECE.
CLASS_MIN_GOLD = 20
CLASS_GAP = 0.1
CLASS_Z = 3.0
SHOWN_UNRELIABLE = 10


@dataclass(frozen=True)
class ClassReliability:
    """The classes of the joint label whose confidence runs far from their accuracy against gold."""

    over: list[dict]  # more confident than right, the most excess errors (items x gap) first
    n_under: int  # right more often than confident, by the same rule


def class_reliability(db: str | Path, run_id: str) -> ClassReliability | None:
    """Per class of the joint label, its confidence against its accuracy on gold (``CLASS_*`` say when a class is
    named); None without gold-labelled items. The run's ECE averages over classes: an over-filled class whose
    labels are mostly wrong hides behind under-filled ones that are right more often than they say."""
    rows = store.query(db, "report_class_reliability", {"run_id": run_id})
    if not rows.num_rows:
        return None

    def off(row: Mapping[str, Any]) -> float:  # signed: above 0 when more confident than right
        gap = row["mean_confidence"] - row["gold_accuracy"]
        if row["n_gold"] < CLASS_MIN_GOLD or abs(gap) < CLASS_GAP:
            return 0.0
        spread = math.sqrt(max(row["mean_confidence"] * (1 - row["mean_confidence"]), 1e-4) / row["n_gold"])
        return gap if abs(gap) >= CLASS_Z * spread else 0.0

    named = [(row, off(row)) for row in rows.to_pylist()]
    over = sorted((row for row, gap in named if gap > 0),
                  key=lambda row: (-row["n_gold"] * (row["mean_confidence"] - row["gold_accuracy"]), row["class"]))
    return ClassReliability(over, sum(gap < 0 for _, gap in named))


def reliability_sentence(reliability: ClassReliability) -> str:
    """What the class table says, for the reports and the run's log."""
    if not reliability.over:
        under = f"{reliability.n_under} {'class is' if reliability.n_under == 1 else 'classes are'}"
        return ("No class's joint labels are far more confident than right against gold"
                + (f" ({under} right more often than confident)." if reliability.n_under else "."))
    under = (f"; {reliability.n_under} other {'class is' if reliability.n_under == 1 else 'classes are'} right more "
             "often than confident" if reliability.n_under else "")
    return (f"{len(reliability.over)} {'class' if len(reliability.over) == 1 else 'classes'} of the joint label "
            f"{'is' if len(reliability.over) == 1 else 'are'} far more confident than right against gold (at least "
            f"{CLASS_GAP:.1f} apart, {CLASS_MIN_GOLD} gold-labelled items or more){under}. The confidence is "
            "calibrated over all classes, not within each: a threshold on it lets through more of these classes' "
            "errors than their confidence says. Check their labels before you accept them.")


def reliability_left_out(reliability: ClassReliability, code=lambda text: f"`{text}`") -> str | None:
    """Which classes a capped table shows, and where the rest are."""
    if len(reliability.over) <= SHOWN_UNRELIABLE:
        return None
    call = 'tasks.sql.statement("report_class_reliability")'
    return (f"The {SHOWN_UNRELIABLE} with the most errors beyond their confidence, of {len(reliability.over)}; "
            f"every class's figures: the query report_class_reliability.sql ({code(call)}).")


RELIABILITY_HEADERS = ["class", "items with gold", "mean confidence", "right against gold", "gold when wrong"]


def reliability_table(reliability: ClassReliability, details: str | None) -> tuple[list[str], list[list[Any]]]:
    """(headers, rows) of the classes named, the first few: each one's gold-labelled items, mean confidence, share
    right, and the gold classes its wrong labels commonly belong to, as shares of its items (where it draws them
    from); with a parent level (runs.details.parents) each class's parent too."""
    parents = json.loads(details or "{}").get("parents") or {}
    rows = []
    for row in reliability.over[:SHOWN_UNRELIABLE]:
        drawn = ", ".join(f"{wrong['gold_class']} {percent(wrong['n'] / row['n_gold'])}"
                          for wrong in row["wrong_gold"] or [])
        rows.append([row["class"], *([parents.get(row["class"])] if parents else []), row["n_gold"],
                     row["mean_confidence"], percent(row["gold_accuracy"]), drawn])
    return (RELIABILITY_HEADERS[:1] + (["parent"] if parents else []) + RELIABILITY_HEADERS[1:]), rows


def rejected_rows(db: str | Path, run_id: str) -> tuple[list[dict], str]:
    """The run's rejected rows by modality and reason, and a sentence on the items they left without a label:
    the statuses' shares count the labelled items only."""
    rows = store.query(db, "report_rejected", {"run_id": run_id}).to_pylist()
    if not rows:
        return [], ""
    n_rows, unlabelled = sum(r["n_rows"] for r in rows), rows[0]["n_unlabelled"]
    return rows, (f"{n_rows:,} (item, modality) rows had no usable embedding; "
                  + (f"{unlabelled:,} of their items got no label at all (every modality rejected)"
                     if unlabelled else "every item got a label from another modality") + ".")


def _consensus_lines(db: str | Path, run_id: str, details: str | None, n_modalities: int,
                     params: Mapping[str, Any]) -> list[str]:
    """The statuses (with their meaning, once) and the confidence bands: what a downstream system acts on."""
    rows = store.query(db, "report_consensus_status", {"run_id": run_id}).to_pylist()
    if not rows:
        return ["No labelled items in this run."]
    gold = any(r["gold_accuracy"] is not None for r in rows)
    table = pa.table({
        "status": [r["status"] for r in rows],
        "items": [f"{r['n_items']:,}" for r in rows],
        "share": [_percent(r["share"]) for r in rows],
        "mean confidence": pa.array([r["mean_confidence"] for r in rows], pa.float64()),
        **({"gold accuracy": [_percent(r["gold_accuracy"]) for r in rows]} if gold else {}),
    })
    lines = [markdown_table(table), ""]
    lines += [f"- {r['status']}: {status_meaning(r['status'], n_modalities)}" for r in rows
              if r["status"] in CONSENSUS_STATUSES]
    bands = store.query(db, "report_consensus_confidence", {"run_id": run_id}).to_pylist()
    if bands:
        calibration = json.loads(details).get("calibration") if details else None
        lines += ["", confidence_summary(bands, calibration, n_modalities, params)]
    for collapsed in collapsed_fits(json.loads(details or "{}").get("refinement")):
        lines += ["", collapsed]
    if (reliability := class_reliability(db, run_id)) is not None:
        lines += ["", reliability_sentence(reliability)]
        headers, rows = reliability_table(reliability, details)
        if rows:  # markdown_table writes the counts and confidences as the other tables do
            lines += ["", markdown_table(pa.Table.from_pylist([dict(zip(headers, row, strict=True)) for row in rows]))]
            if left_out := reliability_left_out(reliability):
                lines += ["", left_out]
    return lines


# more classes than this make the terminal report a wall of rows: the commonest are shown, and the
# class_distribution query has them all
SHOWN_CLASSES = 20


def of_how_many(n_shown: int, n_with_items: int, n_all: int | None, what: str) -> str:
    """How many classes (or parents) a capped table stands for: those that got items in the run, and all of them
    where some got none (a night labels a few items: 117 of 300 classes had one)."""
    if n_all is None or n_all == n_with_items:
        return f"The {n_shown} {what} with the most items, of {n_with_items:,}"
    return f"The {n_shown} {what} with the most items, of the {n_with_items:,} with items ({n_all:,} {what})"


def left_out_note(n_shown: int, n_with_items: int, n_all: int | None, what: str, query: str,
                  code=lambda text: f"`{text}`") -> str:
    """The sentence under a capped shares table, in the terminal and the HTML report alike: how many rows it
    shows of how many, and the query that has them all (``code`` marks up the call that reads it)."""
    call = 'tasks.sql.statement("' + query + '")'
    return f"{of_how_many(n_shown, n_with_items, n_all, what)}; all of them: the query {query}.sql ({code(call)})."


def shown_parents(rows: list[dict], n_parents: int | None, limit: int = SHOWN_CLASSES,
                  code=lambda text: f"`{text}`") -> tuple[list[dict], str]:
    """The rows a parent-shares table shows, the ``limit`` with the most items (the query's order), and the
    sentence that says so ("" when it shows them all): 200 parents were 200 rows."""
    if len(rows) <= limit:
        return rows, ""
    return rows[:limit], left_out_note(limit, len(rows), n_parents, "parents", "report_parent_shares", code)


def n_parents(details: str | None) -> int | None:
    """How many parents the run's classes have (runs.details.parents), None where it recorded none."""
    parents = json.loads(details or "{}").get("parents")
    return len(set(parents.values())) if parents else None


def _parent_shares_table(rows: list[dict], limit: int = SHOWN_CLASSES, n_parents: int | None = None) -> str:
    """One row per parent, the ``limit`` with the most items (the query's order), as the class shares are
    capped: 200 parents were 200 rows."""
    shown, left_out = shown_parents(rows, n_parents, limit)
    table = markdown_table(pa.table({
        "parent": [r["parent"] for r in shown], "items": [f"{r['n_items']:,}" for r in shown],
        "share": [_percent(r["share"]) for r in shown],
        "mean confidence": pa.array([r["mean_confidence"] for r in shown], pa.float64())}))
    return table + (f"\n\n{left_out}" if left_out else "")


def _shares_table(rows: list[dict], limit: int = SHOWN_CLASSES, n_classes: int | None = None) -> str:
    """One row per class (the ``limit`` with the most items, by name), one column per modality x method;
    ``n_classes``, the run's, is said beside the number of classes with items when they differ."""
    if not rows:  # a night that labelled no item: the table was its `| class |` header alone
        return "No items labelled in this run."
    columns = sorted({(r["modality"], r["method"]) for r in rows})
    items: Counter = Counter()
    for r in rows:
        items[r["class"]] += r["n_items"]
    classes, left_out = shown_classes(items, items, limit)
    share = {(r["class"], r["modality"], r["method"]): r["share"] for r in rows}
    table = pa.table({
        "class": classes,
        **{f"{m} {meth}": [percent(share.get((c, m, meth), 0.0)) for c in classes] for m, meth in columns},
    })
    note = (f"\n\n{left_out_note(len(classes), len(items), n_classes, 'classes', 'report_class_distribution')}"
            if left_out else "")
    return markdown_table(table) + note
