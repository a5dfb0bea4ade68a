"""What a run shows in the Prefect UI: a summary table, the agreement report, and progress."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.artifacts import update_progress_artifact

from tasks.policy import IO_TASK
from tasks.report import render_report

# artifact keys: lowercase letters, digits and dashes (Prefect's rule); one key per kind,
# so the UI groups each kind's versions across runs
SUMMARY_KEY = "pairwise-run-summary"
REPORT_KEY = "pairwise-agreement-report"


def start_progress(n_partitions: int) -> UUID:
    return create_progress_artifact(
        progress=0.0, description=f"Partitions done, of {n_partitions} per pass (two passes)"
    )


def advance_progress(artifact_id: UUID, done: int, total: int) -> None:
    update_progress_artifact(artifact_id, progress=100.0 * done / max(total, 1))


@task(name="publish-artifacts", **IO_TASK)
def publish_artifacts(db: str, run_id: str, summary: dict[str, Any]) -> None:
    create_table_artifact(
        key=SUMMARY_KEY,
        table=[{"field": k, "value": str(v)} for k, v in summary.items()],
        description=f"Run {run_id}",
    )
    create_markdown_artifact(key=REPORT_KEY, markdown=render_report(db, run_id), description=f"Run {run_id}")
