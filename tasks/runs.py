"""Tasks at the edges of a run: validate and stage the sources, register, commit or fail the run."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from datetime import datetime
from typing import Any

import pyarrow.parquet as pq
from prefect import get_run_logger, task

from pairwise_core import embeddings
from tasks import model_retention, models, run_log, run_retention, store
from tasks.policy import IO_TASK
from tasks.run_log import count
from tasks.sources import (
    EMBEDDING_SUFFIX, Plan, Source, check_staged_table, inspect_sources, plan_partitions, positions, read_table,
    stage_table,
)
from tasks.staging import Staging, check_staging, prepare_staging


@task(name="validate-sources", **IO_TASK)
def validate_sources(items: str, classes: str, db: str, gold_column: str | None, chunk_size: int,
                     changed_column: str | None = None) -> Plan:
    """The staging folder and the model store, then schema, modalities and dimensions, before anything is
    written."""
    store.check_db_file(db)
    store.check_writable(db)
    check_staging(db)
    models.check_models(db)
    return inspect_sources(items, classes, db=db, gold_column=gold_column, chunk_size=chunk_size,
                           changed_column=changed_column)


@task(name="stage-sources", **IO_TASK)
def stage_sources(plan: Plan, items: str, classes: str, db: str, staging: Staging, chunk_size: int) -> tuple[Plan, str]:
    """Classes to one staged file; a DuckDB items table to staged Parquet, so partitions read by path."""
    columns = ["class_name", *(f"{m}_embedding" for m in plan.modalities)]
    classes_path = str(staging.path("classes.parquet"))
    table = read_table(Source(classes), db, columns)
    order = positions(table.column("class_name").to_pylist(), plan.class_names)
    pq.write_table(table.take(order), classes_path)  # in the plan's order
    table = Source(items).table
    if table is not None:
        files = stage_table(db, table, staging.root / "items", chunk_size)
        check_staged_table(Source(items), files, plan.n_items)
        plan = dataclasses.replace(plan, item_files=tuple(files), partitions=tuple(plan_partitions(files, chunk_size)))
    return plan, classes_path


@task(name="start-run", **IO_TASK)
def start_run(db: str, run_id: str, params: dict[str, Any]) -> int:
    """Under the run lock: clean up after abandoned runs, make the run's staging folder, and register an attempt
    of the run, last (its number is returned): a failure here after the registration's commit left the run
    'running', and each retry of the task registered another attempt."""
    check_staging(db)  # again, before the attempt is registered: validation was a moment ago
    models.check_models(db)
    store.check_room_to_record(db)
    # under the lock no other run is running: every staging folder is a leftover, this run id's included
    # (a process killed before its clean-up left it)
    prepare_staging(db)
    Staging.create(db, run_id)  # before the registration: a registered run has one, for its failure to remove
    # likewise every folder of the model store without a row: what a commit that failed after its rename left
    models.remove_models(db, keep=set(store.model_ids(db)))
    started = store.start_run(db, run_id, params)
    for stale in started.stale:
        get_run_logger().warning("An attempt of run %s was left running by a process that ended: marked failed",
                                 stale)
    if started.succeeded_before:
        get_run_logger().warning(run_log.rerun(run_id))
    return started.attempt


@task(name="check-stored-model", **IO_TASK)
def check_stored_model(plan: Plan, classes: str, db: str, model_id: str, graph_k: int | None = None,
                       review: str = "auto") -> dict[str, Any]:
    """The stored model ``model_id`` ('latest' or an id), if it fits the catalog: its modalities, their
    dimensions and its classes (names and embeddings, by the class hash); else ValueError (bad input, before
    anything is written) saying what differs; with a ``graph_k`` above 0, it must have the graph's part (None:
    the run follows the model, ``graph_k`` in what is returned: the k it was fitted with, 0 without); with a gold
    column, its review must hold the ``review`` route asked for (``Review.as_run_asks``). Returns what
    labelling with it needs: the model's folder, content hash and id (``sealed``), the seed of its folds, how
    it was calibrated, and whether it stores what
    an incremental night's graph needs (``neighbourhood``); its modalities and classes in its order, which
    the run takes (fingerprints, the joint weights and the class indices follow it: a classes file with its
    rows in another order fits); and the model as loaded (``held``): while the caller
    holds it, the label tasks find it loaded (``models.load_model`` keeps models weakly) instead of reading and
    checking every file again (K = 500: 1.2-2.8 s a load; K = 13: 0.06 s)."""
    row, model = store.stored_model(db, model_id)
    name, refit = row["model_id"], "refit with a full run (without --model)"
    if sorted(row["modalities"]) != sorted(plan.modalities):  # in another order they are the same views
        raise ValueError(f"model {name} labels the modalities {', '.join(row['modalities'])}, the catalog has "
                         f"{', '.join(plan.modalities)}; {refit}")
    dims = json.loads(row["dims"])
    other = [f"{m} {dims[m]} in the model, {plan.dims[m]} in the catalog" for m in plan.modalities
             if dims[m] != plan.dims[m]]
    if other:
        raise ValueError(f"model {name} has other dimensions ({'; '.join(other)}); {refit}")
    table = read_table(Source(classes), db, ["class_name", *(f"{m}{EMBEDDING_SUFFIX}" for m in plan.modalities)])
    found = {m: embeddings(table, f"{m}{EMBEDDING_SUFFIX}") for m in plan.modalities}
    names = tuple(model.classifiers.class_names)
    if set(names) == set(plan.class_names) and names != plan.class_names:  # the same classes in the model's order?
        order = positions(plan.class_names, names)
        found = {m: matrix[order] for m, matrix in found.items()}
    else:
        names = plan.class_names
    if models.class_hash(names, found) != row["class_hash"]:
        names = model.classifiers.class_names
        if set(names) != set(plan.class_names):
            missing, extra = set(plan.class_names) - set(names), set(names) - set(plan.class_names)
            what = (f"other classes ({len(missing)} of the catalog's not in the model, {len(extra)} of the model's "
                    "not in the catalog)")
        else:
            what = "the same class names with other class embeddings"
        raise ValueError(f"model {name} was fitted on {what}; {refit}")
    folder = str(store.stored_model_folder(db, name))
    if graph_k and model.graph is None:
        raise ValueError(f"model {name} was fitted without the graph refinement; refit with --graph-k, "
                         "or label with --graph-k 0")
    routes = {"label-aware": model.review is not None and model.review.discriminant is not None,
            "both": model.review is not None and model.review.route == "both"}
    if plan.gold_column and not routes.get(review, True):
        fitted = "without given labels" if model.review is None else f"with the {model.review.route} review"
        raise ValueError(f"model {name} was fitted {fitted}; --review {review} needs a model fitted with it: "
                         f"refit with --gold-column and --review {review}, or label with --review auto")
    return {"sealed": {"folder": folder, "content_hash": row["content_hash"], "model_id": name},
            "modalities": list(row["modalities"]), "class_names": names,
            "seed": json.loads(row["params"])["core"]["seed"], "calibration": model.refinement.calibration,
            "neighbourhood": models.has_late_part(folder, row["content_hash"], name, "neighbourhood"),
            "graph_k": 0 if model.graph is None else fitted_graph_k(db, folder, row["content_hash"], name,
                                                                    graph_k is None),
            "held": model}


def fitted_graph_k(db: str, folder: str, content_hash: str, model_id: str, needed: bool) -> int | None:
    """The k a model fitted with the graph refinement was fitted with: its neighbourhood's (checked against the
    model's manifest), or, in a model stored without one, the parameters of the run that fitted it. None if
    neither says; then, if ``needed`` (the run gave no --graph-k, and follows the model), ValueError."""
    state = models.late_state(folder, content_hash, model_id, "neighbourhood")
    if state is not None:
        return int(state["k"])
    table = store.query_ours(db, "model_fit_params", {"model_id": model_id})
    params = json.loads(table.column(0)[0].as_py()) if table is not None and table.num_rows else {}
    if params.get("graph_k"):
        return int(params["graph_k"])
    if needed:
        raise ValueError(f"model {model_id} was fitted with the graph refinement and does not record its k: give "
                         "--graph-k K (the k it was fitted with), or --graph-k 0 to label without the graph")
    return None


@task(name="check-neighbourhood", **IO_TASK)
def check_neighbourhood(sealed: dict[str, str]) -> models.HeldFile | None:
    """Before anything is written, the stored neighbourhood a night's inductive graph step will read, checked
    against the model's manifest (ValueError, one line, if damaged: the step came after the labelling pass, and
    so did the refusal); its index held open as checked, for the step (``models.check_late_part``)."""
    return models.check_late_part(sealed["folder"], sealed["content_hash"], sealed["model_id"], "neighbourhood")


def check_night_parents(plan: Plan, db: str) -> None:
    """An incremental night carries the catalog's other items over with the parent labels they were given: the
    classes' parents must be those of the latest run, or the catalog would mix two taxonomies. Else ValueError
    (bad input, one line, before anything is written) saying what moved."""
    rows = store.query(db, "night_last_parents").to_pylist()
    if not rows or not rows[0]["recorded"]:  # no run yet, or one from before runs recorded their parents
        return
    before: dict[str, str] | None = json.loads(rows[0]["parents"])
    now = plan.parents_by_class()
    if before == now:
        return
    if before is None or now is None:
        what = "it had none" if before is None else "none now"
    elif set(before) != set(now):
        what = "it had other classes"
    else:
        moved = [f"{name} {before[name]} -> {now[name]}" for name in now if before[name] != now[name]]
        more = ", ..." if len(moved) > 3 else ""
        what = f"{count(len(moved), 'class', 'classes')} moved: {', '.join(moved[:3])}{more}"
    raise ValueError(f"the classes' parents are not those of run {rows[0]['run_id']} ({what}), whose parent labels "
                     "this night would carry over; label every item under these parents with --model, without "
                     "--incremental")


@task(name="extend-seal", **IO_TASK)
def extend_seal(sealed: dict[str, str]) -> str:
    """Seal the model again with the parts added after the labelling pass; its new content hash."""
    return models.extend_seal(sealed["folder"], sealed["content_hash"], sealed["model_id"])


@task(name="seal-model", **IO_TASK)
def seal_model(folder: str) -> str:
    """Write the manifest of the fitted model's parts; return its content hash (tasks/models.py)."""
    return models.seal(folder)


@task(name="commit-run", **IO_TASK)
def commit_run(db: str, run_id: str, attempt: int, staged: dict[str, list[str]], summary: dict[str, Any],
               model: dict[str, Any] | None, catalog: store.CatalogUpdate) -> dict[str, dict[str, int]]:
    """Commit the run (store.commit_run); the counts of its label changes, by change and cause."""
    return store.commit_run(db, run_id, attempt, staged, summary, model, catalog)


def stored_models(db: str) -> list[str]:
    """The ids of the stored models (none before any run)."""
    table = store.query_ours(db, "model_ids")
    return [] if table is None else table.column(0).to_pylist()


def first_night(db: str, model: str | None, incremental: bool) -> bool:
    """Whether an incremental night with --model latest finds no stored model: it then fits one, a full run."""
    return incremental and model == "latest" and not stored_models(db)


def check_still_stored(db: str, model_id: str) -> None:
    """Under the run lock, before anything is written: the model the run checked before it took the lock is still
    stored. A removal (`pairwise models --remove/--keep`, a run's keep_models) takes the lock, so one in between
    took the model, and a night labelled with it anyway: live items of a model without row or files."""
    if model_id not in stored_models(db):
        raise ValueError(f"model {model_id} was removed as this run started (`pairwise models --remove/--keep` or a "
                         f"run's keep_models); `pairwise models --db {db}` lists the stored ones")


def succeeded_before(db: str, run_id: str) -> bool:
    """Whether ``run_id`` names a run that succeeded."""
    table = store.query_ours(db, "report_run", {"run_id": run_id})
    return table is not None and table.column("status").to_pylist() == ["succeeded"]


def attempts_since(db: str, since: datetime) -> list[tuple[str, str]]:
    """(run id, status) of the attempts registered since ``since``, oldest first: none before any run."""
    table = store.query_ours(db, "attempts_since", {"since": since})
    return [] if table is None else list(zip(*table.to_pydict().values(), strict=True))


def in_latest_order(plan: Plan, db: str) -> Plan:
    """The plan with its modalities and classes in the newest stored model's order, where they are the same
    ones: the catalog's fingerprints were taken over the modalities in that order, and refit stability keeps
    a label only under the same class hash, which follows the classes' order (a refit over the same files
    with their columns or class rows in another order kept nothing)."""
    table = store.query_ours(db, "model_row", {"model_id": "latest"})
    if table is None or not table.num_rows:
        return plan
    modalities = table.column("modalities")[0].as_py()
    if sorted(modalities) == sorted(plan.modalities):
        plan = dataclasses.replace(plan, modalities=tuple(modalities))
    try:
        names = models.class_names(store.stored_model_folder(db, table.column("model_id")[0].as_py()))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):  # a folder gone or damaged: no order
        # to follow, and the refit a damaged model's refusal advises must not fail on it
        return plan
    return plan.in_class_order(names) if sorted(names) == sorted(plan.class_names) else plan


@task(name="remove-old-models", **IO_TASK)
def remove_old_models(db: str, keep: int) -> None:
    """After a run committed, under its run lock: the stored models but the newest ``keep`` go, except those that
    still label live items (tasks/model_retention.py). The run stands whatever happens here: a failure is
    logged, not raised, and the next run (or `pairwise models --keep`) tries again."""
    log = get_run_logger()
    try:
        removal = model_retention.remove_under_lock(db, keep=keep)
    except Exception as error:  # DatabaseBusy too (a reader that opened the file after the commit): the run stands
        log.warning("Could not remove old stored models (keep_models %d): %s", keep, str(error).splitlines()[0])
        return
    for line in run_log.models_removed(removal, keep):
        log.info(line)
    for folder in removal.stuck:
        log.warning(run_log.model_folder_stuck(folder))


@task(name="remove-old-runs", **IO_TASK)
def remove_old_runs(db: str, keep: int) -> None:
    """After a run committed, under its run lock: every run older than the newest ``keep`` succeeded ones goes,
    except those something still reads (tasks/run_retention.py). Failures are logged, as keep_models' are."""
    log = get_run_logger()
    try:
        removal = run_retention.remove_runs_under_lock(db, keep)
    except Exception as error:  # DatabaseBusy too: the run stands, and the next one tries again
        log.warning("Could not remove old runs (keep_runs %d): %s", keep, str(error).splitlines()[0])
        return
    for line in run_log.runs_removed(removal, keep):
        log.info(line)


@task(name="fail-run", **IO_TASK)
def fail_run(db: str, run_id: str, attempt: int, error: str, busy: bool = False) -> None:
    store.fail_run(db, run_id, attempt, error, busy)
