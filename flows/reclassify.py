"""The nightly flow: reclassify a catalog and write labels and agreement reports to DuckDB."""

from __future__ import annotations

import inspect
import math
import secrets
import time
from datetime import datetime, timezone
from typing import Any, Literal
from uuid import UUID

import numpy as np
import pyarrow.parquet as pq
from prefect import flow, unmapped
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator
from threadpoolctl import threadpool_limits

from pairwise_core import MixtureRefiner, PairwiseClassifier
from tasks.artifacts import advance_progress, publish_artifacts, start_progress
from tasks.fit import fit_masks, partition_stats
from tasks.label import label_partition
from tasks.metrics import compute_metrics
from tasks.refine import fit_refinement
from tasks.review import fit_review, stage_annotation_issues
from tasks.runs import commit_run, fail_run, stage_sources, start_run, validate_sources
from tasks.sources import Partition
from tasks.staging import Staging
from tasks.store import export_run, run_lock

_CORE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(PairwiseClassifier).parameters.items() if p.kind == p.KEYWORD_ONLY
}
_REFINE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(MixtureRefiner).parameters.items() if p.kind == p.KEYWORD_ONLY
}
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class ReclassifyParams(BaseModel):
    """Parameters of a reclassification run (the Prefect UI renders them as a form)."""

    model_config = ConfigDict(extra="forbid")

    items: str = Field(description="Items: a Parquet path, directory or glob, or table:NAME in the DuckDB file")
    classes: str = Field(description="Classes: a Parquet path or glob, or table:NAME in the DuckDB file")
    db: str = Field(default="pairwise.duckdb", description="DuckDB file the output tables are written to")
    gold_column: str | None = Field(default=None, description="Items column with the current (gold) label")
    strategy: Literal["tourney", "round_robin"] = _CORE_DEFAULTS["strategy"]
    cutoff: float = Field(default=_CORE_DEFAULTS["cutoff"], ge=0)
    min_dims: int = Field(default=_CORE_DEFAULTS["min_dims"], ge=1)
    max_dims: int | None = Field(default=_CORE_DEFAULTS["max_dims"], ge=1)
    min_items: int = Field(default=_CORE_DEFAULTS["min_items"], ge=2)
    pair_margin: float = Field(default=_CORE_DEFAULTS["pair_margin"], ge=0)
    score_floor: float | None = Field(default=_CORE_DEFAULTS["score_floor"], ge=-1, le=1)
    candidates: int | None = Field(
        default=_CORE_DEFAULTS["candidates"], ge=2,
        description="Many classes: only each item's top-m classes by base score play (None: all)",
    )
    seed: int = Field(default=_CORE_DEFAULTS["seed"], ge=0, description="Seeds the tourney bracket")
    chunk_size: int = Field(default=50_000, ge=1, description="Rows per partition (whole row groups), the unit of work")
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN, description="Default: time-stamped")
    export_dir: str | None = Field(default=None, description="Also write the run's tables as Parquet here")
    fit_fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="Fit the masks on this seeded share of the partitions (1: all). Only for catalogs whose "
        "files are not sorted by class: a share of sorted row groups misses whole classes",
    )
    dask_address: str | None = Field(
        default=None,
        description="Run the partition tasks on this Dask scheduler (tcp://host:8786) instead of local threads",
    )

    @model_validator(mode="after")
    def _dims_in_order(self) -> ReclassifyParams:
        # checked here too, so that a bad pair is refused before a run starts, not inside its first task
        if self.max_dims is not None and self.max_dims < self.min_dims:
            raise ValueError(f"max_dims ({self.max_dims}) must be >= min_dims ({self.min_dims})")
        if self.calibration == "gold" and self.gold_column is None:
            raise ValueError("calibration 'gold' needs a gold column (--gold-column)")
        return self

    refine_iterations: int = Field(default=_REFINE_DEFAULTS["n_iter"], ge=1,
                                   description="EM iterations of the refinement (METHOD.md step 8)")
    refine_temperature: float = Field(default=_REFINE_DEFAULTS["temperature"], gt=0,
                                      description="Refinement temperature, relative to the mixture's variance")
    refine_anchor: float = Field(default=_REFINE_DEFAULTS["anchor_weight"], ge=0,
                                 description="Weight of the zero-shot anchor in the refinement's E-step")
    refine_eps: float = Field(default=_REFINE_DEFAULTS["eps"], ge=0, le=1,
                              description="Share of the anchor given to the cosine softmax, not the pairwise label")
    refine_tau: float = Field(default=_REFINE_DEFAULTS["tau"], ge=0, description="Sharpness of the anchor's cosine softmax")
    refine_sample: int = Field(default=20_000, ge=100,
                               description="Rows of the seeded sample that carries the refinement's EM iterations")
    calibration: Literal["auto", "gold", "label-free"] = Field(
        default="auto", description="Fit the confidence weights out of fold on the gold column ('gold'), or not "
        "('label-free'); 'auto': gold when a gold column is given")
    review: Literal["auto", "zero-shot", "label-aware", "both"] = Field(
        default="auto", description="With a gold column, the evidence annotation_issues ranks by: the refined "
        "joint posterior, which never reads the labels ('zero-shot'), an out-of-fold discriminant on the given "
        "labels ('label-aware'), or both combined; 'auto': both")

    def refine_params(self) -> dict[str, Any]:
        return {"n_iter": self.refine_iterations, "temperature": self.refine_temperature,
                "anchor_weight": self.refine_anchor, "eps": self.refine_eps, "tau": self.refine_tau}

    def core_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CORE_DEFAULTS}


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@flow(name="reclassify-catalog", task_runner=ThreadPoolTaskRunner(max_workers=2))
def reclassify_catalog(params: ReclassifyParams) -> dict[str, Any]:
    """Validate, fit masks over all partitions (pass 1), label every partition (pass 2), measure, commit."""
    run_id = params.run_id or new_run_id()
    db = params.db
    plan = validate_sources(params.items, params.classes, db, params.gold_column, params.chunk_size)
    # partitions run in parallel on the task threads, so each GEMM gets one BLAS thread: letting
    # OpenBLAS spawn (and spin) its own threads on top oversubscribes the cores and slows every
    # pass, the Parquet decode included (bench/bench_pipeline.py: -15% wall time at 1M items)
    with run_lock(db), threadpool_limits(limits=1, user_api="blas"):
        attempt = start_run(db, run_id, {**params.model_dump(), "run_id": run_id})
        staging = Staging.for_run(db, run_id)
        watch = Stopwatch()
        timings = watch.laps
        try:
            plan, classes_path = stage_sources(plan, params.items, params.classes, db, staging, params.chunk_size)
            n_parts = len(plan.partitions)
            progress = start_progress(n_parts)

            def partitions(*args: Any, **kwargs: Any) -> list[Any]:
                if params.dask_address is None:  # a subflow costs seconds: map right here on local threads
                    return map_partitions.fn(*args, **kwargs)
                return map_partitions.with_options(task_runner=dask_runner(params.dask_address))(*args, **kwargs)

            fitting = fit_partitions(plan.partitions, params.fit_fraction, params.seed)
            sample_rate = min(1.0, params.refine_sample / max(1, sum(p.n_rows for p in fitting)))
            pass1 = partitions(
                "pair-stats", fitting,
                {"plan": plan, "staging": staging, "classes_path": classes_path, "core_params": params.core_params(),
                 "sample_rate": sample_rate},
                progress, offset=0, total=2 * n_parts,
            )
            advance_progress(progress, n_parts, 2 * n_parts)
            watch.lap("pass1")
            fitted = fit_masks([part["stats"] for part in pass1], plan, classes_path, params.core_params(), staging,
                               run_id)
            watch.lap("fit")
            label_aware = params.calibration == "gold" or (params.calibration == "auto" and bool(plan.gold_column))
            refinement = fit_refinement([part["sample"] for part in pass1], plan, fitted["model"],
                                        params.refine_params(), staging, label_aware, params.seed)
            watch.lap("refine")
            review = None
            if plan.gold_column:
                review = fit_review([part["sample"] for part in pass1], [part["class_sums"] for part in pass1], plan,
                                    fitted["model"], refinement["path"], staging, params.review)
                watch.lap("fit_review")

            staged_parts = partitions(
                "label-partition", plan.partitions,
                {"plan": plan, "staging": staging, "model_path": fitted["model"], "refinement_path": refinement["path"],
                 "review_path": review and review["path"], "seed": params.seed, "run_id": run_id},
                progress, offset=n_parts, total=2 * n_parts,
            )
            watch.lap("pass2")
            label_paths = [part["item_labels"] for part in staged_parts]
            joint_paths = [part["joint_labels"] for part in staged_parts]
            rejected_paths = [part["rejected_items"] for part in staged_parts]
            metrics_paths = compute_metrics(label_paths, joint_paths, rejected_paths, staging, run_id)
            watch.lap("metrics")
            review_paths = [part["review_items"] for part in staged_parts]
            issues_paths = stage_annotation_issues(review_paths, staging, run_id) if plan.gold_column else []
            watch.lap("review")

            summary = {
                "run_id": run_id,
                "n_items": plan.n_items,
                "n_classes": len(plan.class_names),
                "modalities": list(plan.modalities),
                "details": {
                    "brackets": fitted["brackets"],
                    "calibration": refinement["calibration"],
                    "review": review and review["details"],
                    "sample_rate": sample_rate,
                    "n_partitions": n_parts,
                    "n_rejected": sum(pq.ParquetFile(path).metadata.num_rows for path in rejected_paths),
                    "timings": timings,
                },
            }
            staged = {
                "item_labels": label_paths,
                "joint_labels": joint_paths,
                "rejected_items": rejected_paths,
                "pair_masks": [fitted["pair_masks"]],
                "agreement_metrics": [metrics_paths["agreement_metrics"]],
                "confusion_counts": [metrics_paths["confusion_counts"]],
                "calibration_bins": [metrics_paths["calibration_bins"]],
                "annotation_issues": issues_paths,
            }
            commit_run(db, run_id, attempt, staged, summary)
        except BaseException as error:
            fail_run(db, run_id, attempt, f"{type(error).__name__}: {error}".splitlines()[0])
            raise
        finally:
            staging.remove()
    summary["report"] = publish_artifacts(db, run_id, {k: v for k, v in summary.items() if k != "details"} | timings)
    if params.export_dir:
        export_run(db, run_id, params.export_dir)
    return summary


class Stopwatch:
    """Seconds per phase of a run, kept in runs.details (the benchmarks read them)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[f"{phase}_s"] = round(now - self._last, 3)
        self._last = now


PARTITION_TASKS = {"pair-stats": partition_stats, "label-partition": label_partition}


def fit_partitions(partitions: tuple[Partition, ...], fraction: float, seed: int) -> list[Partition]:
    """A seeded share of the partitions (at least one), in their order; all of them for fraction 1."""
    if fraction >= 1:
        return list(partitions)
    count = max(1, math.ceil(fraction * len(partitions)))
    chosen = np.random.default_rng(seed).choice(len(partitions), size=count, replace=False)
    return [partitions[i] for i in sorted(chosen)]


def dask_runner(address: str) -> TaskRunner:
    """prefect-dask's runner on an existing Dask scheduler (imported only when used)."""
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


@flow(name="map-partitions")
def map_partitions(
    stage: str, partitions: list[Partition], arguments: dict[str, Any], progress: UUID, *, offset: int, total: int
) -> list[Any]:
    """One pass: a task per partition, advancing the parent's progress artifact.

    Called as a plain function on the parent flow's local threads, or as a
    subflow on a Dask cluster. Every task reads its own partition by path:
    nothing but paths and small plans travel to the workers.
    """
    task = PARTITION_TASKS[stage]
    futures = task.map(partitions, **{name: unmapped(value) for name, value in arguments.items()})
    done = 0
    for future in as_completed(futures):
        future.result()
        done += 1
        advance_progress(progress, offset + done, total)
    return [future.result() for future in futures]
