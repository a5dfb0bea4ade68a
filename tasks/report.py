"""The agreement report of a run, as Markdown tables (they read well in a terminal too)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyarrow as pa

from tasks import store


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(table: pa.Table, headers: list[str] | None = None) -> str:
    rows = [[_fmt(v) for v in row.values()] for row in table.to_pylist()]
    headers = headers or table.column_names
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def latest_run_id(db: str | Path, *, succeeded: bool = False) -> str | None:
    """The latest run, or the latest succeeded one (what current_labels shows: a run still running
    or failed has no figures)."""
    table = store.query(db, "report_latest_succeeded_run" if succeeded else "report_latest_run")
    return table.column("run_id")[0].as_py() if table.num_rows else None


def shown_classes(candidates: Iterable[str], items: Mapping[str, int], limit: int) -> tuple[list[str], int]:
    """The ``limit`` classes with the most items, by name, and how many were left out (the least common)."""
    ranked = sorted(set(candidates), key=lambda c: (-items.get(c, 0), c))
    return sorted(ranked[:limit]), max(0, len(ranked) - limit)


def run_row(db: str | Path, run_id: str) -> dict:
    """The run's row of `runs`, or a one-line ValueError."""
    runs = store.query(db, "report_run", {"run_id": run_id}).to_pylist()
    if not runs:
        raise ValueError(f"no run {run_id!r} in {db}")
    return runs[0]


def render_report(db: str | Path, run_id: str) -> str:
    """Run summary, base vs pairwise metrics, class distribution, consensus and the top label issues."""
    run = run_row(db, run_id)
    params = json.loads(run["params"])
    lines = [
        f"# Run {run_id}: {run['status']}",
        "",
        f"- items: {_fmt(run['n_items'])}, classes: {_fmt(run['n_classes'])}, "
        f"modalities: {', '.join(run['modalities'] or []) or '-'}",
        f"- strategy {params.get('strategy')}, cutoff {params.get('cutoff')}, seed {params.get('seed')}",
        f"- started {run['started_at']:%Y-%m-%d %H:%M:%S %Z}, finished "
        + (f"{run['finished_at']:%Y-%m-%d %H:%M:%S %Z}" if run["finished_at"] else "-"),
    ]
    if run["error"]:
        lines.append(f"- error: {run['error']}")
    if run["status"] != "succeeded":
        return "\n".join(lines)
    metrics = store.query(db, "report_metrics", {"run_id": run_id})
    lines += ["", "## Agreement and accuracy: base vs pairwise", "", markdown_table(metrics)]
    shares = store.query(db, "report_class_distribution", {"run_id": run_id}).to_pylist()
    lines += ["", "## Class shares", "", _shares_table(shares)]
    consensus = store.query(db, "report_consensus_status", {"run_id": run_id})
    lines += ["", "## One label per item (consensus_labels)", "", markdown_table(consensus)]
    issues = store.query(db, "report_annotation_issues", {"run_id": run_id, "limit": 5})
    if issues.num_rows:
        n_issues = issues.column("n_issues")[0].as_py()
        lines += ["", f"## Labels worth a look: top 5 of {n_issues:,} (annotation_issues)", "",
                  markdown_table(issues.select(["rank", "item_id", "given_label", "suggested_label", "score",
                                                "agreeing_modalities"]))]
    return "\n".join(lines)


# more classes than this make the terminal report a wall of rows: the commonest are shown, and the
# class_distribution query has them all
SHOWN_CLASSES = 20


def _shares_table(rows: list[dict], limit: int = SHOWN_CLASSES) -> str:
    """One row per class (the ``limit`` with the most items, by name), one column per modality x method."""
    columns = sorted({(r["modality"], r["method"]) for r in rows})
    items: Counter = Counter()
    for r in rows:
        items[r["class"]] += r["n_items"]
    classes, left_out = shown_classes(items, items, limit)
    share = {(r["class"], r["modality"], r["method"]): r["share"] for r in rows}
    table = pa.table({
        "class": classes,
        **{f"{m} {meth}": [f"{share.get((c, m, meth), 0.0):.1%}" for c in classes] for m, meth in columns},
    })
    note = (f"\n\nThe {len(classes)} classes with the most items, of {len(items)}; all of them: "
            "sql/report_class_distribution.sql.") if left_out else ""
    return markdown_table(table) + note
