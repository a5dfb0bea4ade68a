"""The nightly cycle with real flows: a full run, incremental nights (new, changed and deleted items), a refit."""

import html
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import write_catalog, written_otherwise
from flows.progress import listening
from flows.reclassify import ReclassifyParams, reclassify_catalog
from flows.terminal import PlainLines
from pairwise_core import make_catalog
from tasks import html_report, report

N_ITEMS, N_CLASSES, CHUNK = 3000, 5, 500
PAIRWISE = str(Path(sys.executable).with_name("pairwise"))


@pytest.fixture(scope="module")
def catalog():
    items, classes = make_catalog(N_ITEMS, N_CLASSES, seed=4, label_noise=0.05)
    return items.append_column("version", pa.array(["v1"] * N_ITEMS)), classes


def rows(db, sql, params=None):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def catalog_state(db) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in rows(db, "SELECT item_id, label, confidence, status, model_id, run_id, labelled_at "
                                          "FROM catalog_labels")}


def changes(db, run_id) -> dict[str, tuple]:
    return {r[0]: r[1:] for r in rows(db, "SELECT item_id, change, cause, old_label, new_label FROM label_changes "
                                          "WHERE run_id = ?", [run_id])}


def night(items: pa.Table, *, drop: int = 100, new: int = 300, changed: int = 60) -> tuple[pa.Table, list, list]:
    """Day 1 of a catalog whose day 0 was ``items[:-new]``: the first ``drop`` items gone, the next
    ``changed`` given another class's embeddings (and version), ``new`` items added at the end."""
    day1 = items.slice(drop)
    ids = day1.column("item_id").to_pylist()
    donors = day1.slice(day1.num_rows - new - changed - 1, changed)  # items of other classes, mostly
    for column in ("image_embedding", "text_embedding"):
        values = day1.column(column).to_pylist()
        values[:changed] = donors.column(column).to_pylist()
        day1 = day1.set_column(day1.schema.get_field_index(column), column,
                               pa.array(values, day1.schema.field(column).type))
    version = ["v2"] * changed + day1.column("version").to_pylist()[changed:]
    day1 = day1.set_column(day1.schema.get_field_index("version"), "version", pa.array(version))
    gone = items.column("item_id").to_pylist()[:drop]
    return day1, gone, ids[:changed]


def day0_then_a_new_file(tmp_path, catalog, written):
    """Day 0 (all but the last 500 items) run in full, then those 500 as ``written`` gives them in a new file
    beside it: the items' glob, the classes, the database and the full run's summary."""
    items, classes = catalog
    folder = tmp_path / "items"
    _, classes_path = write_catalog(folder, items.slice(0, N_ITEMS - 500), classes)
    db = tmp_path / "out.duckdb"
    full = reclassify_catalog(params(str(folder / "items-*.parquet"), classes_path, db))
    pq.write_table(written(items.slice(N_ITEMS - 500)), folder / "items-new.parquet")
    return str(folder / "items-*.parquet"), classes_path, db, full


def params(items_glob, classes, db, **extra):
    return ReclassifyParams(items=items_glob, classes=classes, db=str(db), gold_column="label", chunk_size=CHUNK,
                            **extra)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("changed_column", [None, "version"])
def test_full_run_then_incremental_night_then_refit(tmp_path, catalog, changed_column):
    items, classes = catalog
    n_new = 300
    day0 = items.slice(0, N_ITEMS - n_new)
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, classes, n_files=2, row_group_size=250)
    db = tmp_path / "out.duckdb"
    first = reclassify_catalog(params(glob0, classes_path, db, changed_column=changed_column))
    before = catalog_state(db)
    assert len(before) == day0.num_rows
    assert first["changes"] == {"new": {"new_item": day0.num_rows}}

    day1, gone, changed = night(items, new=n_new)
    glob1, _ = write_catalog(tmp_path / "d1", day1, classes, n_files=3, row_group_size=250)
    summary = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True,
                                        changed_column=changed_column))
    assert summary["model_id"] == first["model_id"]
    details = summary["details"]["night"]
    assert details.pop("partitions_read") == (2 if changed_column else 6)  # the changed and the new items' ones
    assert details == {"source": day1.num_rows, "new": n_new, "changed": len(changed), "deleted": len(gone),
                       "unversioned": 0, "labelled": n_new + len(changed),
                       "carried_over": day1.num_rows - n_new - len(changed)}
    after = catalog_state(db)
    # deleted items leave the current views; every other item is there once
    assert set(after) == set(day1.column("item_id").to_pylist())
    assert rows(db, "SELECT count(*), count(DISTINCT item_id) FROM current_labels")[0] == (2 * len(after), len(after))
    # unchanged items keep their labels, confidence and labelling run exactly
    unchanged = set(after) - set(changed) - set(day1.column("item_id").to_pylist()[-n_new:])
    assert all(after[i] == before[i] for i in unchanged)
    # new and changed items were labelled by this night, with the stored model
    for i in set(after) - unchanged:
        assert after[i][3:5] == (first["model_id"], summary["run_id"])
    recorded = changes(db, summary["run_id"])
    assert {i for i, c in recorded.items() if c[0] == "deleted"} == set(gone)
    assert all(recorded[i][:2] == ("deleted", "removed") for i in gone)
    assert {i for i, c in recorded.items() if c[0] == "new"} == set(day1.column("item_id").to_pylist()[-n_new:])
    relabelled = {i for i, c in recorded.items() if c[0] == "relabelled"}
    assert relabelled and relabelled <= set(changed)  # another class's embeddings: most changed items move
    assert all(recorded[i][1] == "embedding_changed" and recorded[i][2] != recorded[i][3] for i in relabelled)
    assert relabelled == {i for i in changed if after[i][0] != before[i][0]}

    # a stored model's labels equal a relabel's: the whole day-1 catalog relabelled with the same model
    relabel_db = tmp_path / "relabel.duckdb"
    reclassify_catalog(params(glob0, classes_path, relabel_db))  # same seed: the same model, stored there
    full = reclassify_catalog(params(glob1, classes_path, relabel_db, model="latest"))
    assert full["details"]["night"] is None and full["details"]["drift"] is None  # drift: nights only
    relabelled_state = catalog_state(relabel_db)
    # equal labels and statuses; confidences to float32 rounding (other batch sizes block the BLAS products
    # otherwise, docs/operations.md#the-model-store)
    assert {i: (v[0], v[2]) for i, v in relabelled_state.items()} == {i: (v[0], v[2]) for i, v in after.items()}
    assert max(abs(v[1] - after[i][1]) for i, v in relabelled_state.items()) <= 2e-6

    # a night with nothing new labels nothing and changes nothing
    quiet = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True,
                                      changed_column=changed_column))
    assert quiet["details"]["night"]["labelled"] == 0 and quiet["changes"] == {}
    # no file changed: not one partition is decoded (by the versions, or by the files' size and time)
    assert quiet["details"]["night"]["partitions_read"] == 0
    assert catalog_state(db) == after

    # a refit: a new model on the whole catalog; churn of unchanged items is recorded with cause refit
    refit = reclassify_catalog(params(glob1, classes_path, db, seed=7, strategy="round_robin",
                                      changed_column=changed_column, refit_stability=0.0))
    assert refit["model_id"] != first["model_id"]
    churned = changes(db, refit["run_id"])
    assert {c[:2] for c in churned.values()} <= {("relabelled", "refit")}
    final = catalog_state(db)
    assert {i for i in final if final[i][0] != after[i][0]} == set(churned)
    assert all(v[3:5] == (refit["model_id"], refit["run_id"]) for v in final.values())


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_run_again_under_its_run_id_keeps_saying_what_it_changed(tmp_path, catalog):
    items, classes = catalog
    day1, gone, changed = night(items)
    glob0, classes_path = write_catalog(tmp_path / "d0", items.slice(0, N_ITEMS - 300), classes, n_files=2)
    glob1, _ = write_catalog(tmp_path / "d1", day1, classes, n_files=3)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db))
    first = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True, run_id="n1"))
    before, state = changes(db, "n1"), catalog_state(db)
    assert {change for change, *_ in before.values()} == {"new", "relabelled", "deleted"}
    again = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True, run_id="n1"))
    assert changes(db, "n1") == before  # against the catalog before the night, not the one its first attempt left
    assert again["changes"] == first["changes"]
    assert {i: v[:3] for i, v in catalog_state(db).items()} == {i: v[:3] for i, v in state.items()}


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_run_again_on_moved_embeddings_says_the_confidences_it_gave(tmp_path, catalog):
    """Run again with the changed items' embeddings moved a little more, a night gave most of them the labels of
    its first attempt at other confidences: their composed rows kept the first attempt's new_confidence, which
    catalog_labels no longer had (audit-b's finding 1). Every row's new label is the catalog's now."""
    items, classes = catalog
    day1, _, changed = night(items)
    glob0, classes_path = write_catalog(tmp_path / "d0", items.slice(0, N_ITEMS - 300), classes, n_files=2)
    glob1, _ = write_catalog(tmp_path / "d1", day1, classes, n_files=3)
    moved = day1
    for column in ("image_embedding", "text_embedding"):
        values = np.array(moved.column(column).to_pylist(), np.float32)
        values[:len(changed)] *= np.random.default_rng(5).uniform(0.9, 1.1, values[:len(changed)].shape)
        moved = moved.set_column(moved.schema.get_field_index(column), column,
                                 pa.array(list(values), moved.schema.field(column).type))
    glob2, _ = write_catalog(tmp_path / "d2", moved, classes, n_files=3)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db))
    reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True, run_id="n1"))
    first = rows(db, "SELECT item_id, new_confidence FROM label_changes WHERE run_id = 'n1' AND change = 'relabelled'")
    reclassify_catalog(params(glob2, classes_path, db, model="latest", incremental=True, run_id="n1"))
    now = {item: (label, confidence) for item, (label, confidence, *_) in catalog_state(db).items()}
    composed = rows(db, "SELECT item_id, new_label, new_confidence FROM label_changes WHERE run_id = 'n1' "
                        "AND new_label IS NOT NULL")
    assert {item: (label, confidence) for item, label, confidence in composed} == {
        item: now[item] for item, *_ in composed}
    # the same labels at other confidences: rows the re-run has none of its own for
    assert sum(now[item][1] != confidence for item, confidence in first if item in now) > len(first) // 2


@pytest.mark.usefixtures("prefect_harness")
def test_a_stored_model_labels_a_catalog_whose_embedding_columns_come_in_another_order(tmp_path, catalog):
    items, classes = catalog
    glob0, classes_path = write_catalog(tmp_path / "d0", items, classes, n_files=2)
    swapped = items.select(["item_id", "label", "version", "text_embedding", "image_embedding"])
    glob1, _ = write_catalog(tmp_path / "d1", swapped, classes, n_files=2)  # an upstream writer reordered them
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db))
    labels = {i: v[:3] for i, v in catalog_state(db).items()}
    night1 = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True))
    assert night1["details"]["night"]["labelled"] == 0  # the same fingerprints: the views are taken in order
    relabel = reclassify_catalog(params(glob1, classes_path, db, model="latest"))
    assert relabel["modalities"] == ["image", "text"] and not changes(db, relabel["run_id"])
    assert {i: v[:3] for i, v in catalog_state(db).items()} == labels
    # a copy under another name, with its model store, finds its models (models.path names the first file's)
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    shutil.copytree(f"{db}.models", f"{copy}.models")
    again = reclassify_catalog(params(glob1, classes_path, copy, model="latest"))
    assert again["model_id"] == relabel["model_id"]


def as_categories(table: pa.Table) -> pa.Table:
    """The string columns dictionary-encoded, as pandas' category (int8, int16 indices) and polars' Categorical
    (uint32) store them."""
    index = {"item_id": pa.uint32(), "label": pa.int8(), "version": pa.int16(), "class_name": pa.int8()}
    for name, kind in index.items():
        if name in table.column_names:
            column = pc.dictionary_encode(table.column(name).combine_chunks()).cast(pa.dictionary(kind, pa.string()))
            table = table.set_column(table.schema.get_field_index(name), name, column)
    return table


def run_outcome(db, run_id) -> dict[str, list]:
    """What a run wrote that does not name the run or the model: labels, metrics, review and changes."""
    return {name: rows(db, sql, [run_id]) for name, sql in {
        "labels": "SELECT item_id, modality, base_class, pairwise_class, refined_class, refined_confidence, gold_class "
                  "FROM item_labels WHERE run_id = ? ORDER BY ALL",
        "joint": "SELECT item_id, label, confidence, status FROM consensus_labels WHERE run_id = ? ORDER BY ALL",
        "metrics": "SELECT method, metric, modality_a, modality_b, value FROM agreement_metrics WHERE run_id = ? "
                   "ORDER BY ALL",
        "issues": "SELECT item_id, given_label, suggested_label, p_given FROM annotation_issues WHERE run_id = ? "
                  "ORDER BY ALL",
        "changes": "SELECT item_id, change, cause, old_label, new_label FROM label_changes WHERE run_id = ? "
                   "ORDER BY ALL",
    }.items()}


@pytest.mark.usefixtures("prefect_harness")
def test_a_catalog_of_dictionary_encoded_ids_labels_and_classes_runs_and_nights_as_the_plain_one(tmp_path, catalog):
    """item_id, the gold column, the version column and class_name as categories were refused ('must be a
    string'): the full run and a night over them now write what the plain strings' do."""
    items, classes = catalog
    day0, (day1, _, _) = items.slice(0, N_ITEMS - 300), night(items)
    found = {}
    for kind, encode in (("plain", lambda table: table), ("categories", as_categories)):
        glob0, classes_path = write_catalog(tmp_path / kind / "d0", encode(day0), encode(classes), n_files=2,
                                            row_group_size=250)
        glob1, _ = write_catalog(tmp_path / kind / "d1", encode(day1), classes, n_files=3, row_group_size=250)
        db = tmp_path / kind / "out.duckdb"
        full = reclassify_catalog(params(glob0, classes_path, db, changed_column="version"))
        night1 = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True,
                                           changed_column="version"))
        found[kind] = {"full": run_outcome(db, full["run_id"]), "night": run_outcome(db, night1["run_id"]),
                       "counts": night1["details"]["night"], "gold": full["details"]["gold"],
                       "catalog": {i: v[:3] for i, v in catalog_state(db).items()}}
    assert pq.ParquetFile(tmp_path / "categories" / "d1" / "items-0.parquet").schema_arrow.field("item_id").type \
        == pa.dictionary(pa.uint32(), pa.string())
    plain, categories = found["plain"], found["categories"]
    assert plain["full"]["issues"] and plain["night"]["changes"]  # the review and the night had work to do
    # the same labels, ids, counts and changes; probabilities to float32 rounding (two runs of the same plain files
    # in other folders differ as much, up to 2e-6)
    assert first_difference(categories, plain) is None  # (pytest's own diff of 6,000 rows takes minutes)


def first_difference(found, expected, where=""):
    """Where two nests of dicts, lists and tuples first differ (floats by more than 1e-5), and how; or None."""
    if isinstance(expected, dict) and isinstance(found, dict) and found.keys() == expected.keys():
        return next((d for k in expected if (d := first_difference(found[k], expected[k], f"{where}/{k}"))), None)
    if isinstance(expected, list | tuple) and type(found) is type(expected) and len(found) == len(expected):
        return next((d for k, (f, e) in enumerate(zip(found, expected)) if (d := first_difference(f, e, f"{where}/{k}"))),
                    None)
    if isinstance(expected, float) and isinstance(found, float):
        return None if abs(found - expected) <= 1e-5 else (where, found, expected)
    return None if found == expected else (where, found, expected)


def progress_description(run_id: str) -> str:
    """The description of the progress artifact of the flow run named ``run_id``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter

    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(flow_run_filter=FlowRunFilter(name={"any_": [run_id]}))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]), type={"any_": ["progress"]}))
    return artifacts[0].description


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_s_progress_counts_the_items_it_read_and_says_how_many_it_labelled(tmp_path, catalog):
    """Its pass said "done, 3,000 items" while its report said "labelled 10": it reads whole partitions and
    labels their changed items."""
    items, classes = catalog
    items_glob, classes_path = write_catalog(tmp_path / "items", items, classes, n_files=2)
    db = tmp_path / "out.duckdb"
    full = reclassify_catalog(params(items_glob, classes_path, db))
    day1, _, _ = night(items, drop=0, new=0, changed=10)
    write_catalog(tmp_path / "items", day1, classes, n_files=2)
    out = io.StringIO()
    with listening(PlainLines(out)):
        night1 = reclassify_catalog(params(items_glob, classes_path, db, model="latest", incremental=True))
    assert night1["details"]["night"]["labelled"] == 10
    # the UI's progress artifact says how many passes the run makes (a night's said "two passes")
    n_parts = night1["details"]["n_partitions"]
    assert progress_description(full["run_id"]) == f"Partitions done, of {n_parts} per pass (two passes)"
    assert progress_description(night1["run_id"]) == f"Partitions done, of {n_parts} (one pass: a stored model)"
    done = next(line for line in out.getvalue().splitlines() if ": done, " in line)
    read = night1["details"]["night"]["partitions_read"] * CHUNK
    assert f"] pass 1/1: labels of the new and changed items: done, {read:,} items read, 10 labelled, in " in done


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_s_report_says_its_figures_count_the_items_it_labelled_not_the_catalog(tmp_path, catalog):
    """Its header said "items: 3,000" (the catalog) over class shares and accuracy of its 500 new items alone."""
    glob, classes_path, db, full = day0_then_a_new_file(tmp_path, catalog, lambda new: new)
    # the night's own seed is not the one it labels with: its model's (seed 0)
    night1 = reclassify_catalog(params(glob, classes_path, db, model="latest", incremental=True, seed=7))
    scope = ("These figures count the 500 items this night labelled (new or changed), not the catalog's 3,000: "
             "the catalog's labels now are in catalog_labels.")
    text = report.render_report(db, night1["run_id"])
    assert "- items: 3,000," in text
    assert f"\n- stored model {full['model_id']}: strategy tourney, cutoff 1.05, seed 0, as it was fitted\n" in text
    assert "\n- strategy tourney, cutoff 1.05, seed 0\n" in report.render_report(db, full["run_id"])
    for heading in ("## Agreement and accuracy", "## Class shares", "## One label per item",
                    "## Labels worth a look"):
        assert text[text.index(heading):].split("\n")[2] == scope, heading
    page = html_report.build_report(db, night1["run_id"]).html
    for anchor in ("metrics", "shares", "consensus", "gold"):
        section = page[page.index(f'<section id="{anchor}">'):]
        assert section[:section.index("</section>")].count(html.escape(scope)) == 1, anchor
    assert "These figures count" not in report.render_report(db, full["run_id"])  # a full run labels them all
    assert "These figures count" not in html_report.build_report(db, full["run_id"]).html


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_reads_a_new_file_from_another_writer(tmp_path, catalog):
    """Its columns in another order, an extra one, other list and string types: the same items, the same labels."""
    items, classes = catalog
    glob, classes_path, db, _ = day0_then_a_new_file(tmp_path, catalog, written_otherwise)
    before = catalog_state(db)
    night1 = reclassify_catalog(params(glob, classes_path, db, model="latest", incremental=True,
                                       changed_column="version"))
    assert (night1["details"]["night"]["new"], night1["details"]["night"]["labelled"]) == (500, 500)
    after = catalog_state(db)
    assert len(after) == N_ITEMS and all(after[item] == state for item, state in before.items())
    # a relabel of the same rows as one writer wrote them moves nothing
    uniform, _ = write_catalog(tmp_path / "uniform", items, classes, n_files=2)
    relabel = reclassify_catalog(params(uniform, classes_path, db, model="latest"))
    assert not changes(db, relabel["run_id"])
    assert {i: v[:3] for i, v in catalog_state(db).items()} == {i: v[:3] for i, v in after.items()}


@pytest.mark.usefixtures("prefect_harness")
def test_an_empty_partition_typed_null_adds_no_items_and_stops_no_run(tmp_path, catalog):
    """What an empty pandas frame of object columns writes (no rows, every column typed null) stopped the full
    run and the night with `column item_id must be a string, got null`."""
    items, classes = catalog
    folder = tmp_path / "items"
    _, classes_path = write_catalog(folder, items.slice(0, N_ITEMS - 500), classes)
    empty = pa.table({name: pa.nulls(0) for name in items.column_names})
    pq.write_table(empty, folder / "items-00-empty.parquet")  # first: the others are checked against items-0
    db = tmp_path / "out.duckdb"
    full = reclassify_catalog(params(str(folder / "items-*.parquet"), classes_path, db))
    assert full["n_items"] == N_ITEMS - 500 and len(catalog_state(db)) == N_ITEMS - 500
    pq.write_table(items.slice(N_ITEMS - 500), folder / "items-1.parquet")
    pq.write_table(empty, folder / "items-2.parquet")
    night1 = reclassify_catalog(params(str(folder / "items-*.parquet"), classes_path, db, model="latest",
                                       incremental=True, changed_column="version"))
    assert (night1["n_items"], night1["details"]["night"]["new"], night1["details"]["night"]["deleted"]) == (
        N_ITEMS, 500, 0)
    assert len(catalog_state(db)) == N_ITEMS


@pytest.mark.usefixtures("prefect_harness")
def test_a_refit_on_other_modalities_blames_the_model_not_the_embeddings(tmp_path, catalog):
    """The fingerprints of a run over other embedding columns do not compare: its relabels are the refit's."""
    items, classes = catalog
    glob, classes_path = write_catalog(tmp_path / "both", items, classes)
    _, image_only = write_catalog(tmp_path / "image", items, classes.drop(["text_embedding"]))
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob, classes_path, db))
    refit = reclassify_catalog(params(glob, image_only, db))
    assert refit["modalities"] == ["image"]
    causes = {cause for _, cause, _, _ in changes(db, refit["run_id"]).values()}
    assert causes == {"refit"}


@pytest.mark.usefixtures("prefect_harness")
def test_a_database_reached_through_a_symbolic_link_is_one_database(tmp_path, catalog):
    """Its lock, staging and models are named after the file, whichever name a run is given."""
    from tasks import store
    from tasks.staging import staging_folder

    items, classes = catalog
    glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db, link = tmp_path / "p.duckdb", tmp_path / "current.duckdb"
    link.symlink_to(db.name)
    full = reclassify_catalog(params(glob, classes_path, link))
    assert (tmp_path / "p.duckdb.models" / full["model_id"]).is_dir()
    assert not (tmp_path / "current.duckdb.models").exists()
    night = reclassify_catalog(params(glob, classes_path, db, model="latest", incremental=True))
    assert night["model_id"] == full["model_id"] and night["details"]["night"]["labelled"] == 0
    assert store._lock_path(link) == store._lock_path(db) and staging_folder(str(link)) == staging_folder(str(db))


@pytest.mark.usefixtures("prefect_harness")
def test_refit_stability_keeps_unchanged_items_labels(tmp_path):
    # a hard catalog (gold accuracy about 0.6), where a refit with another seed and strategy moves some items
    items, classes = make_catalog(N_ITEMS, N_CLASSES, seed=4, signal_strength=0.06)
    items = items.append_column("version", pa.array(["v1"] * N_ITEMS))
    glob0, classes_path = write_catalog(tmp_path / "d0", items, classes, n_files=2, row_group_size=250)
    # the first run reads no version; the refit does, and records it for the items it keeps too
    refit = {"seed": 7, "strategy": "round_robin", "changed_column": "version"}
    db, churn_db = tmp_path / "out.duckdb", tmp_path / "churn.duckdb"
    first = reclassify_catalog(params(glob0, classes_path, db))
    before = catalog_state(db)
    reclassify_catalog(params(glob0, classes_path, churn_db))
    unstable = reclassify_catalog(params(glob0, classes_path, churn_db, refit_stability=0.0, **refit))
    confidence = dict(rows(churn_db, "SELECT item_id, new_confidence FROM label_changes WHERE run_id = ? "
                                     "AND cause = 'refit'", [unstable["run_id"]]))
    assert len(confidence) > 20, "the refit moved too few items: the test would not test the stability"

    stable = reclassify_catalog(params(glob0, classes_path, db, **refit))  # the default stability, 0.7
    sure = {i for i, p in confidence.items() if p >= 0.7}  # the new model is that confident: they move
    assert set(changes(db, stable["run_id"])) == sure
    after = catalog_state(db)
    assert all(after[i][0] == before[i][0] for i in set(after) - sure)  # labels: only the sure ones moved
    kept = {i for i, v in after.items() if v[4] == first["run_id"]}
    assert kept == set(confidence) - sure  # exactly the items the new model would have moved keep their old row
    details = json.loads(rows(db, "SELECT details FROM runs WHERE run_id = ?", [stable["run_id"]])[0][0])
    assert details["stability"] == {"at": 0.7, "kept": len(kept)}  # and the report says so: they have no rows
    assert f"Refit stability (0.7): {len(kept):,} unchanged items kept their label" in stable["report"]
    # the consensus section counts the new model's labels of the kept items too, and says so above it
    scope = (f"These are the new model's labels of every item: for {len(kept):,} of them refit stability (0.7) "
             "kept their earlier label, and catalog_labels, the catalog's labels now, has that one.")
    text = stable["report"]
    assert text[text.index("## One label per item (consensus_labels)"):].split("\n")[2] == scope
    assert text.count(scope) == 1
    page = html_report.build_report(db, stable["run_id"]).html
    section = page[page.index('<section id="consensus">'):]
    assert section[:section.index("</section>")].count(html.escape(scope)) == 1 and page.count(html.escape(scope)) == 1
    assert "These are the new model's labels" not in first["report"]  # a run that kept nothing
    assert "These are the new model's labels" not in html_report.build_report(db, first["run_id"]).html
    assert all(after[i] == before[i] for i in kept)
    assert all(v[3:5] == (stable["model_id"], stable["run_id"]) for i, v in after.items() if i not in kept)
    assert rows(db, "SELECT count(*) FROM current_labels")[0][0] == 2 * N_ITEMS
    # a night with the version column after it: nothing changed, so nothing is labelled and the kept stay kept
    quiet = reclassify_catalog(params(glob0, classes_path, db, model="latest", incremental=True,
                                      changed_column="version"))
    assert quiet["details"]["night"]["labelled"] == 0 and not changes(db, quiet["run_id"])
    assert catalog_state(db) == after


@pytest.mark.usefixtures("prefect_harness")
def test_a_rerun_with_refit_stability_replaces_its_first_attempt_s_labels_whole(tmp_path):
    """Re-run with another seed, a run kept (stability) rows its first attempt had written: they named the run
    but held a label and model its rows no longer had (helper 53's finding 01). Stability keeps only labels of
    other runs: every catalog row is its run's consensus row, with its run's model."""
    items, classes = make_catalog(N_ITEMS, N_CLASSES, seed=4, signal_strength=0.06)  # a refit moves some items
    glob0, classes_path = write_catalog(tmp_path / "d0", items, classes, n_files=2, row_group_size=250)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db, run_id="day0"))
    kept = "SELECT details ->> '$.stability.kept' FROM runs WHERE run_id = 'refit'"
    reclassify_catalog(params(glob0, classes_path, db, run_id="refit", seed=7, strategy="round_robin"))
    assert int(rows(db, kept)[0][0]) > 0  # some rows of day0 were kept: stability is at work
    reclassify_catalog(params(glob0, classes_path, db, run_id="refit", seed=11))
    assert int(rows(db, kept)[0][0]) > 0
    assert rows(db, "SELECT count(*) FROM catalog_labels c JOIN consensus_labels j USING (run_id, item_id) "
                    "WHERE c.label IS DISTINCT FROM j.label OR c.confidence IS DISTINCT FROM j.confidence") == [(0,)]
    assert rows(db, "SELECT count(*) FROM catalog_labels c JOIN runs r USING (run_id) "
                    "WHERE c.model_id IS DISTINCT FROM r.model_id") == [(0,)]
    assert rows(db, "SELECT count(*) FROM catalog_labels c ANTI JOIN consensus_labels j USING (run_id, item_id)") == [
        (0,)]


@pytest.mark.usefixtures("prefect_harness")
def test_an_item_that_gets_its_first_label_is_new_and_one_that_loses_it_is_deleted(tmp_path, catalog):
    """Rejected in every modality, an item has no label: fixed, it gets its first one ('new', which a sync
    inserts; it was 'relabelled' from NULL, an update of a row the sync never had); broken, it loses it."""
    items, classes = catalog
    day0 = items.slice(0, 600)
    broken = {"image_embedding": None, "text_embedding": None}
    rows_ = day0.to_pylist()
    rows_[0] = {**rows_[0], **broken}
    glob0, classes_path = write_catalog(tmp_path / "d0", pa.Table.from_pylist(rows_, schema=day0.schema), classes)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db))
    rows_ = day0.to_pylist()
    rows_[1] = {**rows_[1], **broken}  # item 0 fixed, item 1 broken
    glob1, _ = write_catalog(tmp_path / "d1", pa.Table.from_pylist(rows_, schema=day0.schema), classes)
    night = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True))
    got = {item: (change, cause, old is None, new is None) for item, (change, cause, old, new)
           in changes(db, night["run_id"]).items()}
    first, second = day0.column("item_id")[0].as_py(), day0.column("item_id")[1].as_py()
    assert got == {first: ("new", "embedding_changed", True, False), second: ("deleted", "embedding_changed", False, True)}


@pytest.mark.usefixtures("prefect_harness")
def test_a_refit_over_the_same_items_written_otherwise_keeps_them_as_stably(tmp_path):
    """Another writer's files (columns in another order, other types) and a classes file with its rows in
    another order: the same embeddings and classes, so the same fingerprints, class hash and stability. The run took the file's column order, its fingerprints did not
    compare, and a refit kept no item's label (513 of 9,202 relabelled on real-verbs)."""
    items, classes = make_catalog(N_ITEMS, N_CLASSES, seed=4, signal_strength=0.06)
    glob0, classes_path = write_catalog(tmp_path / "d0", items, classes, n_files=2, row_group_size=250)
    glob1, _ = write_catalog(tmp_path / "d1", written_otherwise(items), classes, n_files=2, row_group_size=250)
    reversed_classes = str(tmp_path / "classes-reversed.parquet")  # the class rows in another order, too
    pq.write_table(classes.take(list(range(classes.num_rows))[::-1]), reversed_classes)
    refit = {"seed": 7, "strategy": "round_robin"}  # moves some items (test_refit_stability_keeps_...)
    moved = {}
    for name, glob, refit_classes in (("same", glob0, classes_path), ("otherwise", glob1, reversed_classes)):
        db = tmp_path / f"{name}.duckdb"
        reclassify_catalog(params(glob0, classes_path, db))
        moved[name] = changes(db, reclassify_catalog(params(glob, refit_classes, db, **refit))["run_id"])
    assert moved["otherwise"] == moved["same"]


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_without_the_version_column_keeps_the_recorded_versions(tmp_path, catalog):
    items, classes = catalog
    day0 = items.slice(0, N_ITEMS - 200)
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, classes, n_files=2, row_group_size=250)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db, changed_column="version"))
    glob1, _ = write_catalog(tmp_path / "d1", items, classes, n_files=2, row_group_size=250)
    weekly = reclassify_catalog(params(glob1, classes_path, db))  # a refit that reads no version
    versions = dict(rows(db, "SELECT version IS NULL, count(*) FROM catalog_items GROUP BY 1"))
    assert versions == {False: N_ITEMS - 200, True: 200}  # kept where the embeddings did not change
    # 10 of the 200 items the refit added (no version yet) get other embeddings, their version unchanged
    image = items.column("image_embedding").to_pylist()
    image[N_ITEMS - 200:N_ITEMS - 190] = image[:10]
    day2 = items.set_column(items.schema.get_field_index("image_embedding"), "image_embedding",
                            pa.array(image, items.schema.field("image_embedding").type))
    glob2, _ = write_catalog(tmp_path / "d2", day2, classes, n_files=2, row_group_size=250)
    night1 = reclassify_catalog(params(glob2, classes_path, db, model="latest", incremental=True,
                                       changed_column="version"))
    # the 200 are checked by their fingerprint: the 10 changed ones are labelled, the others carried over
    assert {k: night1["details"]["night"][k] for k in ("new", "changed", "unversioned", "labelled")} == {
        "new": 0, "changed": 10, "unversioned": 200, "labelled": 10}
    assert {cause for _, cause, *_ in changes(db, night1["run_id"]).values()} <= {"embedding_changed"}
    assert rows(db, "SELECT count(*) FROM catalog_items WHERE version IS NULL") == [(0,)]  # recorded now
    assert rows(db, "SELECT count(*) FROM catalog_labels WHERE run_id = ?", [weekly["run_id"]]) == [(N_ITEMS - 10,)]
    night2 = reclassify_catalog(params(glob2, classes_path, db, model="latest", incremental=True,
                                       changed_column="version"))
    assert night2["details"]["night"]["labelled"] == 0


@pytest.mark.usefixtures("prefect_harness")
def test_an_item_that_never_had_a_label_leaves_no_change_when_it_goes(tmp_path, catalog):
    items, classes = catalog
    day0 = items
    for name in ("image_embedding", "text_embedding"):  # 5 items rejected in every modality
        values = day0.column(name).to_pylist()
        values[:5] = [[0.0] * len(values[0])] * 5
        day0 = day0.set_column(day0.schema.get_field_index(name), name, pa.array(values, day0.schema.field(name).type))
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, classes, n_files=2, row_group_size=250)
    db = tmp_path / "out.duckdb"
    first = reclassify_catalog(params(glob0, classes_path, db))
    ids = day0.column("item_id").to_pylist()
    assert not set(ids[:5]) & set(changes(db, first["run_id"]))  # no label appeared
    glob1, _ = write_catalog(tmp_path / "d1", day0.slice(10), classes, n_files=2, row_group_size=250)
    night1 = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True))
    # the 5 labelled items that went are 'deleted'; the 5 that never had a label left none: no row (they had
    # one, old_label null, which a sync deleting what it holds could not apply)
    assert changes(db, night1["run_id"]).keys() == set(ids[5:10])
    assert not rows(db, "SELECT item_id FROM catalog_labels WHERE item_id IN (SELECT unnest(?))", [ids[:10]])


@pytest.mark.usefixtures("prefect_harness")
def test_a_null_version_is_checked_by_fingerprint(tmp_path, catalog):
    items, classes = catalog
    column = items.schema.get_field_index("version")
    versions = [None] * 20 + ["v1"] * (N_ITEMS - 20)  # 20 items without a value in the column
    day0 = items.set_column(column, "version", pa.array(versions, pa.string()))
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, classes, n_files=2, row_group_size=250)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db, changed_column="version"))
    # day 1: 10 of the 20 get other items' embeddings, their value still null; 10 others lose theirs, unchanged
    day1 = day0
    for name in ("image_embedding", "text_embedding"):
        values = day1.column(name).to_pylist()
        values[:10] = values[N_ITEMS - 10:]
        day1 = day1.set_column(day1.schema.get_field_index(name), name, pa.array(values, day1.schema.field(name).type))
    day1 = day1.set_column(column, "version", pa.array([None] * 30 + ["v1"] * (N_ITEMS - 30), pa.string()))
    glob1, _ = write_catalog(tmp_path / "d1", day1, classes, n_files=2, row_group_size=250)
    night1 = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True,
                                       changed_column="version"))
    # a null says nothing: the 30 are checked by fingerprint, and the 10 that changed are labelled (a null on both
    # sides was taken for unchanged: none was labelled, and they kept labels of embeddings they no longer had)
    assert {k: night1["details"]["night"][k] for k in ("new", "changed", "unversioned", "labelled")} == {
        "new": 0, "changed": 10, "unversioned": 30, "labelled": 10}
    ids = day1.column("item_id").to_pylist()
    assert sorted(r[0] for r in rows(db, "SELECT item_id FROM catalog_labels WHERE run_id = ?",
                                     [night1["run_id"]])) == sorted(ids[:10])
    assert {cause for _, cause, *_ in changes(db, night1["run_id"]).values()} <= {"embedding_changed"}
    # the night's labels are a relabel's with the same model
    copy = tmp_path / "copy.duckdb"
    shutil.copy(db, copy)
    shutil.copytree(f"{db}.models", f"{copy}.models")
    relabel = reclassify_catalog(params(glob1, classes_path, copy, model="latest", changed_column="version"))
    relabelled = dict(rows(copy, "SELECT item_id, label FROM catalog_labels WHERE run_id = ?", [relabel["run_id"]]))
    assert dict(rows(db, "SELECT item_id, label FROM catalog_labels")) == relabelled
    # day 2: the 10 that lost their value get it back, with other embeddings: the null was recorded, so the
    # value differs from it (the old value had stayed recorded, the same as the new: nothing was labelled)
    day2 = day1.set_column(column, "version", pa.array([None] * 20 + ["v1"] * (N_ITEMS - 20), pa.string()))
    for name in ("image_embedding", "text_embedding"):
        values = day2.column(name).to_pylist()
        values[20:30] = values[N_ITEMS - 30:N_ITEMS - 20]
        day2 = day2.set_column(day2.schema.get_field_index(name), name, pa.array(values, day2.schema.field(name).type))
    glob2, _ = write_catalog(tmp_path / "d2", day2, classes, n_files=2, row_group_size=250)
    night2 = reclassify_catalog(params(glob2, classes_path, db, model="latest", incremental=True,
                                       changed_column="version"))
    assert sorted(r[0] for r in rows(db, "SELECT item_id FROM catalog_labels WHERE run_id = ?",
                                     [night2["run_id"]])) == sorted(ids[20:30])


@pytest.mark.usefixtures("prefect_harness")
def test_refit_stability_keeps_no_row_of_other_classes_or_parents(tmp_path):
    items, classes = make_catalog(N_ITEMS, N_CLASSES, seed=4, signal_strength=0.06)
    parents = pa.array(["p0", "p0", "p1", "p1", "p1"][:N_CLASSES] + ["p1"] * (N_CLASSES - 5), pa.string())
    glob0, _ = write_catalog(tmp_path / "d0", items, classes.append_column("parent", parents), n_files=2)
    other = tmp_path / "other-parents.parquet"
    pq.write_table(classes.append_column("parent", pa.array(["q"] * N_CLASSES, pa.string())), other)
    renamed = tmp_path / "renamed.parquet"
    names = classes.column("class_name").to_pylist()
    pq.write_table(classes.set_column(0, "class_name", pa.array([names[0] + "-new", *names[1:]])), renamed)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, str(tmp_path / "d0" / "classes.parquet"), db))
    refit = {"seed": 7, "strategy": "round_robin"}  # moves some items (test_refit_stability_keeps_...)
    moved = reclassify_catalog(params(glob0, str(other), db, **refit))
    assert {r[1:] for r in rows(db, "SELECT item_id, run_id, parent_label FROM catalog_labels")} == {
        (moved["run_id"], "q")}  # no row kept from under the old parents
    again = reclassify_catalog(params(glob0, str(renamed), db, refit_stability=0.7))
    assert {r[0] for r in rows(db, "SELECT DISTINCT run_id FROM catalog_labels")} == {again["run_id"]}
    assert names[0] not in {r[0] for r in rows(db, "SELECT DISTINCT label FROM catalog_labels")}


def test_incremental_needs_a_stored_model_and_falls_back_to_a_fit_on_the_first_night(tmp_path, catalog):
    with pytest.raises(ValueError, match="--incremental labels with a stored model"):
        ReclassifyParams(items="x", classes="y", incremental=True)
    with pytest.raises(ValueError, match="add --incremental"):
        ReclassifyParams(items="x", classes="y", model="latest", refit_on_drift=True)


@pytest.mark.usefixtures("prefect_harness")
def test_first_incremental_night_fits_a_model(tmp_path, catalog):
    items, classes = catalog
    glob0, classes_path = write_catalog(tmp_path / "d0", items, classes)
    db = tmp_path / "out.duckdb"
    summary = reclassify_catalog(params(glob0, classes_path, db, model="latest", incremental=True))
    assert summary["details"]["night"] is None and summary["details"]["sample_rate"] is not None
    assert rows(db, "SELECT count(*) FROM models")[0][0] == 1
    assert len(catalog_state(db)) == N_ITEMS


def test_a_killed_incremental_night_changes_nothing_readers_see(server, tmp_path, catalog):
    _, env = server
    items, classes = catalog
    glob0, classes_path = write_catalog(tmp_path / "d0", items.slice(0, N_ITEMS - 300), classes, n_files=2)
    db = tmp_path / "out.duckdb"
    base = [PAIRWISE, "run", "--classes", classes_path, "--db", str(db), "--gold-column", "label", "--chunk-size",
            str(CHUNK), "--quiet"]
    done = subprocess.run(base + ["--items", glob0], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    day1, _, _ = night(items)
    glob1, _ = write_catalog(tmp_path / "d1", day1, classes, n_files=3, row_group_size=250)
    seen = lambda: (sorted(catalog_state(db).items()), rows(db, "SELECT * FROM label_changes ORDER BY ALL"),
                    rows(db, "SELECT * FROM current_labels ORDER BY item_id, modality"))
    expected = seen()
    rng = random.Random(1)
    for k in range(3):
        process = subprocess.Popen(base + ["--items", glob1, "--model", "latest", "--incremental",
                                           "--run-id", f"killed-{k}"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not (Path(f"{db}.staging") / f"killed-{k}").exists() and process.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        status = rows(db, "SELECT status FROM runs WHERE run_id = ?", [f"killed-{k}"])
        if status != [("succeeded",)]:  # killed before its commit: nothing changed
            assert seen() == expected
    finished = subprocess.run(base + ["--items", glob1, "--model", "latest", "--incremental"], env=env,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert set(catalog_state(db)) == set(day1.column("item_id").to_pylist())


@pytest.mark.usefixtures("prefect_harness")
def test_a_night_like_the_fit_does_not_drift_and_another_catalog_refits_on_drift(tmp_path, catalog):
    items, classes = catalog
    day0 = items.slice(0, 2000)
    glob0, classes_path = write_catalog(tmp_path / "d0", day0, classes, n_files=2, row_group_size=250)
    db = tmp_path / "out.duckdb"
    reclassify_catalog(params(glob0, classes_path, db))
    assert rows(db, "SELECT count(*) FROM drift_metrics")[0][0] == 0  # a full run fits: nothing to compare

    # items of the same catalog: no drift
    glob1, _ = write_catalog(tmp_path / "d1", items, classes, n_files=3, row_group_size=250)
    same = reclassify_catalog(params(glob1, classes_path, db, model="latest", incremental=True, refit_on_drift=True))
    measured = rows(db, "SELECT modality, metric, drifted, n_current FROM drift_metrics WHERE run_id = ? "
                        "ORDER BY modality", [same["run_id"]])
    assert [(m, metric) for m, metric, *_ in measured] == [
        ("consensus", "class_share_js_distance"), ("image", "domain_classifier_auc"), ("text", "domain_classifier_auc")]
    assert [(drifted, n) for _, _, drifted, n in measured] == [(False, N_ITEMS - 2000)] * 3
    assert "refit" not in same

    # a thousand items of another catalog, whose embeddings lie elsewhere: drift, and a refit that night
    other, _ = make_catalog(1000, N_CLASSES, seed=99)
    other = other.set_column(0, "item_id", pa.array([f"other-{i}" for i in range(1000)]))
    other = other.append_column("version", pa.array(["v1"] * 1000))
    glob2, _ = write_catalog(tmp_path / "d2", pa.concat_tables([items, other]), classes, n_files=3,
                             row_group_size=250)
    shifted = reclassify_catalog(params(glob2, classes_path, db, model="latest", incremental=True,
                                        refit_on_drift=True, export_dir=str(tmp_path / "export")))
    drifted = rows(db, "SELECT modality FROM drift_metrics WHERE run_id = ? AND drifted ORDER BY 1",
                   [shifted["run_id"]])
    assert ("image",) in drifted and ("text",) in drifted
    assert shifted["refit"] == f"{shifted['run_id']}-refit"
    (refit_model,) = rows(db, "SELECT model_id FROM runs WHERE run_id = ? AND status = 'succeeded'",
                          [shifted["refit"]])[0]
    assert refit_model != shifted["model_id"]
    assert {r[0] for r in rows(db, "SELECT DISTINCT model_id FROM catalog_labels")} <= {refit_model,
                                                                                          shifted["model_id"]}
    assert len(catalog_state(db)) == N_ITEMS + 1000
    # one export holds the night and its refit: the refit's own replaced the night's, and with it the only
    # label_changes rows of the night's new items
    exported = pq.read_table(tmp_path / "export" / "label_changes.parquet")
    assert set(exported.column("run_id").to_pylist()) <= {shifted["run_id"], shifted["refit"]}
    assert exported.filter(pc.equal(exported.column("change"), "new")).num_rows == 1000
    assert sorted(pq.read_table(tmp_path / "export" / "runs.parquet").column("run_id").to_pylist()) == [
        shifted["run_id"], shifted["refit"]]
