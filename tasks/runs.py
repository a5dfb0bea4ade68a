"""Tasks at the edges of a run: validate and stage the sources, register, commit or fail the run."""

from __future__ import annotations

import dataclasses
from typing import Any

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from tasks import models, store
from tasks.policy import IO_TASK
from tasks.sources import Plan, Source, inspect_sources, plan_partitions, read_table, stage_table
from tasks.staging import Staging, check_staging, prepare_staging


@task(name="validate-sources", **IO_TASK)
def validate_sources(items: str, classes: str, db: str, gold_column: str | None, chunk_size: int) -> Plan:
    """The staging folder and the model store, then schema, modalities and dimensions, before anything is
    written."""
    check_staging(db)
    models.check_models(db)
    return inspect_sources(items, classes, db=db, gold_column=gold_column, chunk_size=chunk_size)


@task(name="stage-sources", **IO_TASK)
def stage_sources(plan: Plan, items: str, classes: str, db: str, staging: Staging, chunk_size: int) -> tuple[Plan, str]:
    """Classes to one staged file; a DuckDB items table to staged Parquet, so partitions read by path."""
    columns = ["class_name", *(f"{m}_embedding" for m in plan.modalities)]
    classes_path = str(staging.path("classes.parquet"))
    pq.write_table(read_table(Source(classes), db, columns), classes_path)
    table = Source(items).table
    if table is not None:
        files = stage_table(db, table, staging.root / "items", chunk_size)
        plan = dataclasses.replace(plan, item_files=tuple(files), partitions=tuple(plan_partitions(files, chunk_size)))
    return plan, classes_path


@task(name="start-run", **IO_TASK)
def start_run(db: str, run_id: str, params: dict[str, Any]) -> int:
    """Register an attempt of the run (its number is returned) under the run lock; clean up after abandoned ones."""
    check_staging(db)  # again, before the attempt is registered: validation was a moment ago
    models.check_models(db)
    started = store.start_run(db, run_id, params)
    for stale in started.stale:
        get_run_logger().warning("An attempt of run %s was left running by a process that ended: marked failed",
                                 stale)
    # under the lock no other run is running: every staging folder is a leftover, this run id's included
    # (a process killed before its clean-up left it)
    prepare_staging(db)
    # likewise every folder of the model store without a row: what a commit that failed after its rename left
    models.remove_models(db, keep=set(store.model_ids(db)))
    return started.attempt


@task(name="seal-model", **IO_TASK)
def seal_model(folder: str) -> str:
    """Write the manifest of the fitted model's parts; return its content hash (tasks/models.py)."""
    return models.seal(folder)


@task(name="commit-run", **IO_TASK)
def commit_run(db: str, run_id: str, attempt: int, staged: dict[str, list[str]], summary: dict[str, Any],
               model: dict[str, Any]) -> None:
    store.commit_run(db, run_id, attempt, staged, summary, model)


@task(name="fail-run", **IO_TASK)
def fail_run(db: str, run_id: str, attempt: int, error: str) -> None:
    store.fail_run(db, run_id, attempt, error)
