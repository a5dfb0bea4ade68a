"""The nightly flow: reclassify a catalog and write labels and agreement reports to DuckDB."""

from __future__ import annotations

import dataclasses
import math
import secrets
import time
from contextlib import suppress
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from prefect import flow, get_run_logger, unmapped
from prefect.context import FlowRunContext
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from threadpoolctl import threadpool_limits

from flows.dask_workers import check_workers, scheduler_lost
from flows.params import ReclassifyParams
from flows.prefect_server import after_commit, unreachable
from flows.progress import begin_phase, partition_done
from flows.run_log_failures import install as one_line_failures
from pairwise_core.model import Review
from tasks import run_log
from tasks.artifacts import PROGRESS_EVERY_S, advance_progress, publish_artifacts, start_progress
from tasks.environment import run_environment
from tasks.errors import output_closed
from tasks.fit import fit_masks, partition_stats
from tasks.folders import report_path
from tasks.graph import fit_graph, inductive_graph, propagate_graph
from tasks.graph_labels import apply_graph
from tasks.label import label_partition
from tasks.metrics import compute_metrics
from tasks.refine import fit_refinement
from tasks.report import collapsed_fits
from tasks.review import fit_review, stage_annotation_issues
from tasks.runs import (
    check_neighbourhood, check_night_parents, check_still_stored, check_stored_model, commit_run, extend_seal, fail_run,
    first_night, in_latest_order, remove_old_models, remove_old_runs, seal_model, stage_sources, start_run,
    validate_sources,
)
from tasks.sources import Partition, Plan, SourceError, file_signatures
from tasks.staging import Staging, write_parquet
from tasks.drift import measure_drift, sample_rate, warm_up
from tasks.night import plan_night
from tasks.store import (
    CatalogUpdate, DatabaseBusy, ExportFailed, RunFailed, check_export_dir, export_run, min_free_bytes,
    registered_attempt, run_lock,
)

__all__ = ["ReclassifyParams", "reclassify_catalog"]

one_line_failures()  # bad input and the like: one line in the flow run's log, no traceback


def new_run_id() -> str:
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def flow_run_name() -> str:
    """The flow run's name is its run id: the given one, or a new one decided here, once, as Prefect starts
    the run (from the CLI or on a deployment's worker alike); the flow reads it back as its run id, so the
    Prefect UI and `runs` name a run the same way.

    A deployment's parameters may still be the raw JSON here (Prefect names the run before it validates
    them): the run id is read from either form, and a bad one is refused by the validation that follows.
    """
    params = FlowRunContext.get().parameters["params"]
    given = params.run_id if isinstance(params, ReclassifyParams) else params.get("run_id")
    return given or new_run_id()


@flow(name="reclassify-catalog", flow_run_name=flow_run_name, task_runner=ThreadPoolTaskRunner(max_workers=2))
def reclassify_catalog(params: ReclassifyParams) -> dict[str, Any]:
    """Validate, fit masks over all partitions (pass 1), label every partition (pass 2), measure, commit (with
    the fitted model). With ``params.model``, label with that stored model instead: no fit, one pass."""
    began = time.perf_counter()
    log = get_run_logger()
    run_id = params.run_id or FlowRunContext.get().flow_run.name  # flow_run_name() decided it
    params = params.for_workers()  # on Dask, paths the workers resolve as this process does
    db = params.db
    begin_phase("validate the sources")
    if params.export_dir:
        check_export_dir(params.export_dir, params.db)
    min_free_bytes()
    plan = validate_sources(params.items, params.classes, db, params.gold_column, params.chunk_size,
                            params.changed_column)
    if first_night(db, params.model, params.incremental):
        log.info(run_log.first_night(db))
        params = params.model_copy(update={"model": None, "incremental": False, "refit_on_drift": False})
    # a stored model to label with must fit the catalog: refused before anything is written; `using` holds the
    # model the check loaded ("held") until the flow ends, so the label tasks find it loaded
    using = params.model and check_stored_model(plan, params.classes, db, params.model, params.graph_k,
                                                params.review)
    # the graph as given, or, not given, as the stored model was fitted: the k the run uses from here on, recorded
    # in runs.params (a night without --graph-k on a model fitted with it labelled without the graph, silently)
    graph_k, model_graph = follow_model_graph(params.graph_k, using)
    params = params.model_copy(update={"graph_k": graph_k})
    if using:  # the columns and the classes file's rows may come in another order: the run takes the model's
        plan = dataclasses.replace(plan, modalities=tuple(using["modalities"])).in_class_order(using["class_names"])
    if using and params.incremental:
        check_night_parents(plan, db)
        if params.graph_k and using["neighbourhood"]:  # held with the model until the flow ends
            using["checked_neighbourhood"] = check_neighbourhood(using["sealed"])
    # partitions run in parallel on the task threads, so each GEMM gets one BLAS thread: letting
    # OpenBLAS spawn (and spin) its own threads on top oversubscribes the cores and slows every
    # pass, the Parquet decode included (bench/bench_pipeline.py: -15% wall time at 1M items)
    with run_lock(db), threadpool_limits(limits=1, user_api="blas"):
        if using:  # checked before the lock: a removal, which takes it, may have come in between
            check_still_stored(db, using["sealed"]["model_id"])
        staging = Staging.for_run(db, run_id)  # start-run makes it
        attempt: int | None = None  # until start-run returns it, though its registration may have committed
        try:
            attempt = start_run(db, run_id, {**params.model_dump(), "run_id": run_id})
            watch = Stopwatch()
            timings = watch.laps
            if not using:  # a refit takes the last model's orders (read once start_run has waited out other writers)
                plan = in_latest_order(plan, db)
            begin_phase("stage the sources")
            plan, classes_path = stage_sources(plan, params.items, params.classes, db, staging, params.chunk_size)
            watch.lap("stage")
            # what the source's files were when validated (a DuckDB table has none): recorded with the items'
            # fingerprints, so that a later night skips the files that did not change; and checked after the last
            # pass, so that a file replaced since validation fails the run
            signatures = plan.signatures
            n_parts = len(plan.partitions)
            log.info(run_log.catalog(plan, params.chunk_size))
            for note in run_log.source_notes(plan):
                log.warning(note)
            progress = start_progress(n_parts, 1 if using else 2)

            def partitions(*args: Any, **kwargs: Any) -> list[Any]:
                if params.dask_address is None:  # a subflow costs seconds: map right here on local threads
                    return map_partitions.fn(*args, **kwargs)
                check_workers(params.dask_address, log)  # workers without the project, or another version of it
                return map_partitions.with_options(task_runner=dask_runner(params.dask_address))(*args, **kwargs)

            def fit() -> dict[str, Any]:
                """Pass 1 and the fits: the model, sealed; and what the run records of the fit."""
                fitting = fit_partitions(plan.partitions, params.fit_fraction, params.seed)
                sample_rate = min(1.0, params.refine_sample / max(1, sum(p.n_rows for p in fitting)))
                begin_phase("pass 1/2: pair statistics", sum(p.n_rows for p in fitting), len(fitting))
                pass1 = partitions(
                    "pair-stats", fitting,
                    {"plan": plan, "staging": staging, "classes_path": classes_path, "core_params": params.core_params(),
                     "sample_rate": sample_rate, "class_sums": bool(plan.gold_column) and params.review != "zero-shot"},
                    progress, offset=0, total=2 * n_parts,
                )
                advance_progress(progress, n_parts, 2 * n_parts)
                watch.lap("pass1")
                log.info(run_log.partition_pass("Pass 1/2, pair statistics", fitting, timings["pass1_s"], n_parts))
                begin_phase("fit the masks")
                fitted = fit_masks([part["stats"] for part in pass1], plan, classes_path, params.core_params(), staging,
                                   run_id)
                watch.lap("fit")
                log.info(run_log.masks(fitted["pair_masks"], timings["fit_s"]))
                begin_phase("fit the refinement")
                labels_path = str(staging.path("sample_labels", "pairwise.npz"))
                refined = fit_refinement([part["sample"] for part in pass1], plan, fitted["model"],
                                         params.refine_params(), params.label_aware(), params.seed, labels_path)
                calibration = refined["calibration"]
                watch.lap("refine")
                log.info(run_log.refinement(calibration, len(plan.modalities), sample_rate, timings["refine_s"],
                                            {"gold_column": params.gold_column, "calibration": params.calibration}))
                for line in collapsed_fits(refined["fits"]):
                    log.warning(line)
                if params.label_aware() and calibration == "label-free":
                    log.warning(run_log.too_few_labels(params.gold_column, len(plan.modalities)))
                review = None
                if plan.gold_column:
                    begin_phase("fit the review")
                    review = fit_review([part["sample"] for part in pass1], [part.get("class_sums") for part in pass1],
                                        plan, fitted["model"], params.review, params.issues_below, labels_path)
                    watch.lap("fit_review")
                    log.info(run_log.review_fit(review, timings["fit_review_s"]))
                if params.graph_k:
                    begin_phase("fit the graph's projection")
                    fit_graph([part["sample"] for part in pass1], plan, fitted["model"])
                    watch.lap("fit_graph")
                # fitting and labelling meet only through the model's files: pass 2 loads them as a stored model
                sealed = {"folder": fitted["model"], "content_hash": seal_model(fitted["model"]),
                          "model_id": new_run_id()}  # an id of its own: a run id can be re-run
                stored = {**sealed, "class_hash": fitted["class_hash"], "dims": dict(plan.dims),
                          "params": {"core": params.core_params(), "refine": params.refine_params(),
                                     "refinement": refined["fits"],  # the temperature each modality's mixture took
                                     "calibration": calibration, "review": review and review["route"]}}
                return {"sealed": sealed, "seed": params.seed, "calibration": calibration, "review": review,
                        "refinement": refined["fits"],
                        "brackets": fitted["brackets"], "sample_rate": sample_rate,
                        "pair_masks": [fitted["pair_masks"]], "store": stored}

            if using is None:
                model, passes = fit(), 2
            else:  # a stored model: no fit, one pass; its review as this run asks (tasks/label.py)
                stored_review = using["held"].review or Review.zero_shot(params.issues_below)
                review = plan.gold_column and {
                    "route": stored_review.as_run_asks(params.review, params.issues_below).route,
                    "requested": params.review, "issues_below": params.issues_below, "stored": True}
                model, passes = {**using, "review": review or None, "brackets": None, "sample_rate": None,
                                 "pair_masks": [], "store": None}, 1

            night = None
            if params.incremental:
                warm_up()  # the drift tests' import, while the night plans and labels
                begin_phase("plan the night: new, changed and deleted items")
                night = plan_night(plan, db, staging, run_id, signatures)
                watch.lap("plan_night")
                log.info(run_log.night_plan(night))
            labelling = plan.partitions if night is None else night.partitions
            # the graph needs the whole catalog: a night's items take one step against the neighbours the stored
            # model keeps (its neighbourhood), if it keeps them
            graph = bool(params.graph_k) and night is None
            inductive = bool(params.graph_k) and night is not None and bool(model.get("neighbourhood"))
            if params.graph_k and not graph and not inductive:
                log.warning(run_log.graph_skipped())
            # a night reads whole partitions and labels the new and changed items in them: its count is of items
            # read (what takes the time), and it says how many it labelled (the report's "labelled")
            begin_phase(f"pass {passes}/{passes}: labels" + ("" if night is None else " of the new and changed items"),
                        sum(p.n_rows for p in labelling), len(labelling), selective=night is not None)
            staged_parts = partitions(
                "label-partition", list(labelling),
                {"plan": plan, "staging": staging, "sealed": model["sealed"], "seed": model["seed"], "run_id": run_id,
                 "selections": night and night.selections,
                 "drift_rate": None if night is None else sample_rate(night.n_new + (night.n_changed or 0)
                                                                           + (night.n_unversioned or 0)),
                 "graph": graph or inductive, "review_as": (params.review, params.issues_below)},
                progress, offset=(passes - 1) * n_parts, total=passes * n_parts,
            )
            watch.lap("pass2")
            check_unchanged(signatures, plan.item_files)
            if len(labelling) < n_parts:  # a night's partitions it did not need to read are done too
                advance_progress(progress, 1, 1)
            n_labelled = sum(part["n_labelled"] for part in staged_parts)
            log.info(run_log.partition_pass(f"Pass {passes}/{passes}, labels", labelling, timings["pass2_s"],
                                            n_parts, "those with new or changed items"))
            if night is not None:
                log.info(run_log.night_labelled(night.details(n_labelled)))
            graph_details = None
            graph_parts = [part["graph_parts"] for part in staged_parts]
            # the drift tests' class shares compare the night's joint labels before any graph step with the
            # fit sample's, which took none: after it, a night of the fit's own items drifted by 0.04-0.08
            unpropagated = [part["joint_labels"] for part in staged_parts]
            if graph and n_labelled:
                begin_phase("graph refinement")
                fitting = model["store"] is not None  # the model keeps what a night's inductive step needs
                propagated = propagate_graph(graph_parts, params.graph_k, len(plan.modalities), staging,
                                             model["seed"], model["sealed"]["folder"] if fitting else None,
                                             params.graph_reference)
                staged_parts, graph_details = (refine_over_graph(staged_parts, propagated, plan, staging, run_id)
                                               if propagated[0] else (staged_parts, propagated[1]))
                if fitting:
                    content_hash = extend_seal(model["sealed"])
                    model["sealed"] = {**model["sealed"], "content_hash": content_hash}
                    model["store"] = {**model["store"], "content_hash": content_hash}
                watch.lap("graph")
                log.info(run_log.graph(graph_details))
            elif inductive and n_labelled:
                begin_phase("graph refinement, inductive")
                staged_parts, graph_details = refine_over_graph(staged_parts, inductive_graph(
                    graph_parts, model["sealed"], params.graph_k, len(plan.modalities), staging), plan, staging,
                    run_id)
                watch.lap("graph")
                log.info(run_log.graph_inductive(graph_details))
            label_paths = [part["item_labels"] for part in staged_parts]
            joint_paths = [part["joint_labels"] for part in staged_parts]
            rejected_paths = [part["rejected_items"] for part in staged_parts]
            log.info(run_log.rejected(rejected_paths))
            begin_phase("metrics")
            metrics_paths = compute_metrics([part["metric_confusion"] for part in staged_parts],
                                            [part["metric_calibration"] for part in staged_parts], staging, run_id,
                                            plan.parent is not None) if n_labelled else {}
            watch.lap("metrics")
            for line in run_log.metrics(metrics_paths.get("agreement_metrics")):
                log.info(line)
            drift = None
            if night is not None:  # an incremental night: how far is it from what the model was fitted on?
                begin_phase("drift")
                drift = measure_drift(model["sealed"], [part["drift_sample"] for part in staged_parts],
                                      unpropagated, plan, staging, run_id, model["seed"])
                watch.lap("drift")
                for line in run_log.drift(drift):
                    log.info(line)
            review_paths = [part["review_items"] for part in staged_parts]
            if plan.gold_column:  # no phase for what a run without given labels skips
                begin_phase("review the gold labels")
            issues_paths = stage_annotation_issues(review_paths, staging, run_id) if plan.gold_column and n_labelled \
                else []
            watch.lap("review")
            log.info(run_log.review(plan.gold_column, issues_paths, timings["review_s"], params.issues_below))

            summary = {
                "run_id": run_id,
                "n_items": plan.n_items,
                "n_classes": len(plan.class_names),
                "modalities": list(plan.modalities),
                "model_id": model["sealed"]["model_id"],
                "details": {
                    "brackets": model["brackets"],
                    "calibration": model["calibration"],
                    "refinement": model.get("refinement"),  # None for a stored model's run: it fitted none
                    "review": model["review"],
                    "sample_rate": model["sample_rate"],
                    "gold": plan.gold and plan.gold.details(),
                    "parents": plan.parents_by_class(),  # what a night's carried-over parent labels are under
                    "parent_confidence": parent_confidence(plan, staged_parts, n_labelled, graph_details),
                    "n_partitions": n_parts,
                    "n_labelled": n_labelled,
                    "night": night and night.details(n_labelled),
                    "drift": drift and {"rows": drift["rows"], "skipped": drift["skipped"]},
                    "graph": graph_record(params.graph_k, graph_details, n_labelled, model_graph),
                    "n_rejected": sum(pq.ParquetFile(path).metadata.num_rows for path in rejected_paths),
                    "timings": timings,
                    "environment": run_environment(),
                },
            }
            staged = {
                "item_labels": label_paths,
                "joint_labels": joint_paths,
                "rejected_items": rejected_paths,
                "pair_masks": model["pair_masks"],
                **{table: [path] for table, path in metrics_paths.items()},
                "drift_metrics": [drift["path"]] if drift and drift["path"] else [],
                "annotation_issues": issues_paths,
            }
            begin_phase("commit")
            catalog = CatalogUpdate(
                state=tuple(part["catalog_state"] for part in staged_parts),
                deleted=None if night is None else (night.deleted,),
                stability=params.refit_stability if using is None else 0.0,
                files=night.files if night is not None else recorded_files(signatures, staging),
                versioned=plan.changed_column is not None, parents=plan.parents_by_class(),
                versions=night.source if night is not None and plan.changed_column else None)
            summary["changes"] = commit_run(db, run_id, attempt, staged, summary, model["store"], catalog)
            log.info(run_log.changes(summary["changes"]))
            log.info(run_log.finished(run_id, timings, time.perf_counter() - began))
        except BaseException as caught:
            if attempt is None and (attempt := registered(db, run_id)) is None:
                raise  # refused or stopped before the run registered: nothing to record, bad input stays bad input
            error = failure(caught, staging, params.dask_address)
            reason = f"{type(error).__name__}: {error}".splitlines()[0] if str(error) else type(error).__name__
            with suppress(OSError):  # first: a run that filled the disk with staged rows frees it to record why
                staging.remove()
            busy = isinstance(error, DatabaseBusy)  # readers kept the file through the commit's whole wait
            try:  # best effort: the run's own error is what the user must see
                fail_run(db, run_id, attempt, reason, busy)
            except Exception as unrecorded:
                log.warning("Could not record that run %s failed in %s: %s (the next run marks it abandoned)",
                            run_id, db, f"{type(unrecorded).__name__}: {unrecorded}".splitlines()[0])
                if busy:  # the same readers, most likely: the line says what they leave
                    error = DatabaseBusy(f"{error}; nothing of run {run_id} was committed, and runs shows it running "
                                         "until the next run marks it abandoned")
            if isinstance(error, ValueError):  # bad input is refused before start_run: this run did start
                raise RunFailed(reason) from error
            if error is not caught:
                raise error from caught
            raise
        finally:
            staging.remove()
        if params.keep_models:  # the run stands: still under its lock, no other run reads a model meanwhile
            remove_old_models(db, params.keep_models)
        if params.keep_runs:  # after the models: a run goes only once no stored model is its
            remove_old_runs(db, params.keep_runs)
    begin_phase("reports")
    with after_commit():  # the run stands: what Prefect is told from here on is for its UI (flows/prefect_server.py)
        summary["report"], summary["html_problem"] = publish_artifacts(
            db, run_id, {k: v for k, v in summary.items() if k != "details"} | timings)
    if (html := report_path(db, run_id)).is_file():
        log.info(run_log.html_report(html))
    export([run_id], params.export_dir, db)
    if params.refit_on_drift and drift and any(row["drifted"] for row in drift["rows"]):
        refit_id = f"{run_id[:122]}-refit"  # a run id's pattern allows 128 characters
        log.warning(run_log.refit_on_drift(refit_id))
        summary["refit"] = reclassify_catalog(params.model_copy(update={
            "model": None, "incremental": False, "refit_on_drift": False, "run_id": refit_id,
            "export_dir": None}))["run_id"]
        # one export of both: the refit's own replaced the night's, whose new items its label_changes lack
        export([run_id, summary["refit"]], params.export_dir, db)
    return summary


def follow_model_graph(given: int | None, using: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
    """The graph refinement's k a run uses (0: off) and, with a stored model fitted with the graph, what
    runs.details.graph records of it (``model_k``, and ``k_from``: 'model' or 'option'), each logged: no
    --graph-k follows the model; --graph-k 0 turns its graph off (a warning says so); another k is used, as
    given (the inductive step's neighbours are found in the stored index whatever their number)."""
    log = get_run_logger()
    model_k = using["graph_k"] if using else 0
    if not model_k and model_k is not None:  # no stored model, or one fitted without the graph
        return given or 0, {}
    model_id = using["sealed"]["model_id"]
    if given is None:
        log.info(run_log.graph_followed(model_id, model_k))
        return model_k, {"model_k": model_k, "k_from": "model"}
    if given == 0:
        log.warning(run_log.graph_not_used(model_id, model_k))
    elif given != model_k:  # model_k None: the model does not record it, and the line says so
        log.info(run_log.graph_other_k(model_id, model_k, given))
    return given, {"model_k": model_k, "k_from": "option"}


def graph_record(k: int, done: dict[str, Any] | None, n_labelled: int, model_graph: dict[str, Any]
                 ) -> dict[str, Any] | None:
    """runs.details.graph: what the graph step did, or why it did not run; None if the run had no graph to use."""
    if k:
        why = "no item to label" if not n_labelled else "incremental night, no stored neighbourhood"
        return {**(done or {"k": k, "skipped": why}), **model_graph}
    if model_graph:  # --graph-k 0 on a model fitted with the graph
        return {"k": 0, "skipped": "--graph-k 0: the model's graph not used", **model_graph}
    return None


def failure(error: BaseException, staging: Staging, dask_address: str | None = None) -> BaseException:
    """What failed the run, where its own error would mislead: its staging folder removed under it, the
    Prefect API gone (a progress update's ConnectError), its Dask scheduler gone (distributed's cancelled
    futures), or its worker gone (the SystemExit of a log line's broken pipe). Ctrl-C and SIGTERM are what
    they are."""
    if lost := scheduler_lost(error, dask_address):
        return lost
    if not isinstance(error, Exception):
        return output_closed(error) or error
    return staging.gone() or unreachable(error) or error


def registered(db: str, run_id: str) -> int | None:
    """The attempt this process registered, when start-run did not return its number: a signal or an error in
    the instant after its registration's commit left the run 'running' until a later run marked it abandoned.
    None if there is none, or if the file cannot tell (a warning; the run's own error is what the user sees)."""
    try:
        return registered_attempt(db, run_id)
    except Exception as unread:
        get_run_logger().warning("Could not read whether run %s was registered in %s: %s (if so, the next run "
                                 "marks it abandoned)", run_id, db,
                                 f"{type(unread).__name__}: {unread}".splitlines()[0])
        return None


def export(run_ids: list[str], directory: str | None, db: str) -> None:
    """Export the runs' rows to ``directory``, if given; a failure there is the export's, not the runs'."""
    if not directory:
        return
    begin_phase("export")
    try:
        export_run(db, run_ids, directory)
    except Exception as error:
        raise ExportFailed(f"run {' and '.join(run_ids)} succeeded, but exporting it to {directory} failed: "
                           f"{type(error).__name__}: {error}".splitlines()[0]) from error


def refine_over_graph(staged_parts: list[dict[str, Any]], propagated: tuple[list[str], dict[str, Any]], plan: Plan,
                      staging: Staging, run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rewrite the partitions' label rows from the graph's posteriors (``propagated``: a path per partition
    and what was done), on the flow's two threads; what was done, for runs.details."""
    posteriors, details = propagated
    began = time.perf_counter()
    futures = [apply_graph.submit(part, path, plan, staging, index, run_id)
               for index, (part, path) in enumerate(zip(staged_parts, posteriors, strict=True))]
    rewritten = [future.result() for future in futures]
    return rewritten, {**details, "apply_s": round(time.perf_counter() - began, 3)}


def parent_confidence(plan: Plan, staged_parts: list[dict[str, Any]], n_labelled: int,
                      graph_details: dict[str, Any] | None) -> str | None:
    """How the run made its parent confidence, for runs.details and the reports: 'calibrated' (the children's
    summed probability sharpened by the model's powers, fitted out of fold on the gold column's parents) or
    'sum' (label-free, a model without powers for these parents, or the graph's propagated posteriors, which
    get the plain sum); None when it made none (no parents, no item labelled)."""
    if plan.parent is None or not n_labelled:
        return None
    # the graph step rewrote every parent column from its posteriors, unless it had no item to place
    propagated = graph_details is not None and "skipped" not in graph_details
    return "sum" if propagated or not all(part["parent_powers"] for part in staged_parts) else "calibrated"


class Stopwatch:
    """Seconds per phase of a run, kept in runs.details (the benchmarks read them)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[f"{phase}_s"] = round(now - self._last, 3)
        self._last = now


def check_unchanged(signatures: pa.Table | None, files: tuple[str, ...]) -> None:
    """SourceError if a source file changed while the run read it: its passes read one file's rows before and
    another's after (an upstream job moving items between files mid-run made a full run mark them deleted)."""
    if signatures is None:
        return
    now = {row["path"]: row for row in file_signatures(files).to_pylist()}
    if moved := [row["path"] for row in signatures.to_pylist() if now.get(row["path"]) != row]:
        more = f" (and {len(moved) - 1} more)" if len(moved) > 1 else ""
        raise SourceError(f"{moved[0]}: changed while the run read it{more}; nothing was committed: run again once "
                          "the source's files stay as they are")


def recorded_files(signatures: pa.Table | None, staging: Staging) -> str | None:
    """A full run fingerprints every item: its source files' signatures, staged for catalog_files."""
    return None if signatures is None else write_parquet(staging.path("files", "part-00000.parquet"), signatures)


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
    """One pass: a task per partition, advancing the parent's progress artifact (at most once a
    PROGRESS_EVERY_S, and at the pass's end).

    Called as a plain function on the parent flow's local threads, or as a
    subflow on a Dask cluster. Every task reads its own partition by path:
    nothing but paths and small plans travel to the workers.
    """
    task = PARTITION_TASKS[stage]
    futures = task.map(partitions, **{name: unmapped(value) for name, value in arguments.items()})
    rows = {future: partition.n_rows for future, partition in zip(futures, partitions, strict=True)}
    done, shown = 0, -math.inf
    for future in as_completed(futures):
        future.result()
        done += 1
        if done == len(futures) or time.monotonic() - shown >= PROGRESS_EVERY_S:
            advance_progress(progress, offset + done, total)
            shown = time.monotonic()
        partition_done(rows[future], future.result().get("n_labelled"))  # a label task's count
    return [future.result() for future in futures]
