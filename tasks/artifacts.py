"""What a run shows in the Prefect UI: a summary table, the agreement report with figures, and progress.

The UI renders a markdown artifact's images with a plain <img>, data URIs
included, so the main figures are embedded in the report as PNGs. The full
HTML report (every figure, the annotation issues) is written beside the
database as <db>.reports/<run_id>.html and named in the artifact: a
file:// link would not open from the UI's http page, so no link artifact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.artifacts import update_progress_artifact

from tasks import run_log, store
from tasks.folders import report_path
from tasks.html_report import Figure, write_report
from tasks.policy import IO_TASK
from tasks.report import class_reliability, render_report

# artifact keys: lowercase letters, digits and dashes (Prefect's rule); one key per kind,
# so the UI groups each kind's versions across runs
SUMMARY_KEY = "pairwise-run-summary"
REPORT_KEY = "pairwise-agreement-report"


def start_progress(n_partitions: int, passes: int) -> UUID:
    """The run's progress artifact: a full run makes two passes over its partitions, a run with a stored model
    one (a night's said "two passes")."""
    per = f"of {n_partitions} per pass (two passes)" if passes == 2 else f"of {n_partitions} (one pass: a stored model)"
    return create_progress_artifact(progress=0.0, description=f"Partitions done, {per}")


# Each update is a request the Prefect server answers, about 40 ms of its CPU and the flow's, taken from a pass
# that keeps every core busy: at most one a PROGRESS_EVERY_S, and a pass's last
PROGRESS_EVERY_S = 2.0


def advance_progress(artifact_id: UUID, done: int, total: int) -> None:
    update_progress_artifact(artifact_id, progress=100.0 * done / max(total, 1))


def figures_markdown(figures: Sequence[Figure], html_path: str) -> str:
    """The main figures as Markdown images with data URIs, and where the full report is."""
    lines = ["", "## Figures", ""]
    for figure in figures:
        lines += [f"### {figure.title}", "", f"![{figure.title}]({figure.data_uri()})", "", figure.caption, ""]
    lines.append(f"Full HTML report (every figure, the annotation issues): `{html_path}`")
    return "\n".join(lines)


def summary_rows(summary: dict[str, Any]) -> list[dict[str, str]]:
    """The summary table's rows, each value as the run's log says it: the UI showed Python's reprs
    (``['image', 'text']``, ``{'new': {'new_item': 5000}}``, ``5000``, ``0.245``)."""
    def shown(field: str, value: Any) -> str:
        if field == "changes":
            return run_log.changes(value).removeprefix("Label changes: ")
        if isinstance(value, list | tuple):
            return ", ".join(map(str, value))
        if isinstance(value, float) and field.endswith("_s"):
            return f"{value:,.2f} s"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return str(value)

    return [{"field": field, "value": shown(field, value)} for field, value in summary.items()]


@task(name="publish-artifacts", **IO_TASK)
def publish_artifacts(db: str, run_id: str, summary: dict[str, Any]) -> tuple[str, str | None]:
    """Publish the run's summary, report and figures in the UI; return the report's text (the CLI prints it),
    and why there is no HTML report, if there is none (the CLI says so: the warning reaches the UI alone)."""
    create_table_artifact(key=SUMMARY_KEY, table=summary_rows(summary), description=f"Run {run_id}")
    path = report_path(db, run_id)
    problem = None
    with store.reading(db):  # both reports' queries over one reader, and the log's
        text = markdown = render_report(db, run_id)
        if (reliability := class_reliability(db, run_id)) is not None and reliability.over:
            get_run_logger().warning(run_log.overconfident_classes(reliability))
        try:
            markdown += figures_markdown(write_report(db, run_id, path).main_figures, str(path.resolve()))
        except Exception as error:  # the run is committed: a report it cannot draw must not fail it
            problem = f"no HTML report for run {run_id} (the run is committed): {type(error).__name__}: {error}"
            get_run_logger().warning(problem)
    create_markdown_artifact(key=REPORT_KEY, markdown=markdown, description=f"Run {run_id}")
    return text, problem
