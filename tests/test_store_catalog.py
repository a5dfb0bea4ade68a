"""The catalog's state (catalog_items) and label_changes across commits of tasks/store.py, on a real DuckDB file:
an item keeps one row however often it is relabelled, deleted and brought back, and a failed commit changes none."""

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tasks import store
from tasks.label import JOINT_SCHEMA, STATE_SCHEMA

CATALOG = "SELECT item_id, label, confidence, status, model_id, run_id, fingerprint, deleted_by FROM catalog_items"


def commit(db, tmp_path, run_id, labels, gone=None, files=None):
    """labels: item -> (label, confidence, fingerprint); gone: the items a night found deleted (None: a full run)."""
    joint = [{"run_id": run_id, "item_id": item, "label": label, "confidence": confidence, "status": "agreed",
              "agreeing_modalities": 2, "n_modalities": 2} for item, (label, confidence, _) in labels.items()]
    state = [{"item_id": item, "fingerprint": fingerprint} for item, (*_, fingerprint) in labels.items()]
    paths = {name: str(tmp_path / f"{run_id}-{name}.parquet") for name in ("joint", "state", "gone")}
    pq.write_table(pa.Table.from_pylist(joint, JOINT_SCHEMA), paths["joint"])
    pq.write_table(pa.Table.from_pylist(state, STATE_SCHEMA), paths["state"])
    if gone is not None:
        pq.write_table(pa.table({"item_id": pa.array(gone, pa.string())}), paths["gone"])
    with store.run_lock(db):
        attempt = store.start_run(db, run_id, {}).attempt
        return store.commit_run(
            db, run_id, attempt, {"joint_labels": [paths["joint"]]},
            {"n_items": len(labels), "n_classes": 2, "modalities": ["image", "text"], "details": {},
             "model_id": "m1"},
            catalog=store.CatalogUpdate(state=(paths["state"],), deleted=None if gone is None else (paths["gone"],),
                                        files=files))


def table(db, sql):
    with duckdb.connect(db, read_only=True) as con:
        return sorted(con.execute(sql).fetchall())


def test_items_keep_one_row_through_relabels_deletions_and_returns(tmp_path):
    db = str(tmp_path / "out.duckdb")
    assert commit(db, tmp_path, "r1", {"a": ("hat", 0.9, 1), "b": ("bag", 0.8, 2), "c": ("hat", 0.7, 3)}) == {
        "new": {"new_item": 3}}
    # a night: a's embeddings changed and so did its label, d is new, b is gone
    assert commit(db, tmp_path, "r2", {"a": ("bag", 0.6, 11), "d": ("bag", 0.5, 4)}, gone=["b"]) == {
        "new": {"new_item": 1}, "relabelled": {"embedding_changed": 1}, "deleted": {"removed": 1}}
    assert table(db, CATALOG) == [
        ("a", "bag", pytest.approx(0.6), "agreed", "m1", "r2", 11, None),
        ("b", "bag", pytest.approx(0.8), "agreed", "m1", "r1", 2, "r2"),
        ("c", "hat", pytest.approx(0.7), "agreed", "m1", "r1", 3, None),
        ("d", "bag", pytest.approx(0.5), "agreed", "m1", "r2", 4, None),
    ]
    # b comes back, with another label: a new item again, its one row live; c's label does not change
    assert commit(db, tmp_path, "r3", {"b": ("hat", 0.4, 2), "c": ("hat", 0.75, 3)}, gone=[]) == {
        "new": {"new_item": 1}}
    after = table(db, CATALOG)
    assert after == [
        ("a", "bag", pytest.approx(0.6), "agreed", "m1", "r2", 11, None),
        ("b", "hat", pytest.approx(0.4), "agreed", "m1", "r3", 2, None),
        ("c", "hat", pytest.approx(0.75), "agreed", "m1", "r3", 3, None),
        ("d", "bag", pytest.approx(0.5), "agreed", "m1", "r2", 4, None),
    ]
    assert table(db, "SELECT run_id, item_id, change, old_label, new_label, cause FROM label_changes") == [
        ("r1", "a", "new", None, "hat", "new_item"), ("r1", "b", "new", None, "bag", "new_item"),
        ("r1", "c", "new", None, "hat", "new_item"), ("r2", "a", "relabelled", "hat", "bag", "embedding_changed"),
        ("r2", "b", "deleted", "bag", None, "removed"), ("r2", "d", "new", None, "bag", "new_item"),
        ("r3", "b", "new", None, "hat", "new_item"),
    ]
    # a full run that labels a and b only: c and d are gone
    assert commit(db, tmp_path, "r4", {"a": ("bag", 0.6, 11), "b": ("hat", 0.4, 2)}) == {"deleted": {"removed": 2}}
    assert table(db, "SELECT item_id, run_id, deleted_by FROM catalog_items") == [
        ("a", "r4", None), ("b", "r4", None), ("c", "r3", "r4"), ("d", "r2", "r4")]

    # a commit that fails after catalog_items changed in its transaction (its files' signatures are missing)
    before = {sql: table(db, sql) for sql in (CATALOG, "SELECT * FROM label_changes", "SELECT * FROM catalog_files")}
    with pytest.raises(duckdb.Error):
        commit(db, tmp_path, "r5", {"a": ("hat", 0.9, 12), "e": ("hat", 0.9, 5)}, gone=["b"],
               files=str(tmp_path / "missing.parquet"))
    assert {sql: table(db, sql) for sql in before} == before
    assert table(db, "SELECT status FROM runs WHERE run_id = 'r5'") == [("running",)]


def test_a_commit_whose_run_row_does_not_read_back_succeeded_commits_nothing(tmp_path):
    """Rows are found through their run's row: a commit must not land without it (a file an earlier failed
    COMMIT left inconsistent dropped rows appended to runs; here the row is deleted under the attempt)."""
    db = str(tmp_path / "out.duckdb")
    commit(db, tmp_path, "r1", {"a": ("hat", 0.9, 1)})
    before = table(db, CATALOG), table(db, "SELECT * FROM label_changes")
    joint = str(tmp_path / "r2-joint.parquet")
    pq.write_table(pa.Table.from_pylist([{"run_id": "r2", "item_id": "a", "label": "bag", "confidence": 0.5,
                                          "status": "agreed", "agreeing_modalities": 2, "n_modalities": 2}],
                                        JOINT_SCHEMA), joint)
    state = str(tmp_path / "r2-state.parquet")
    pq.write_table(pa.Table.from_pylist([{"item_id": "a", "fingerprint": 2}], STATE_SCHEMA), state)
    with store.run_lock(db):
        attempt = store.start_run(db, "r2", {}).attempt
        with duckdb.connect(db) as con:
            con.execute("DELETE FROM runs WHERE run_id = 'r2'")
        with pytest.raises(RuntimeError, match=r"run r2's row in runs reads back as missing in this run's commit, so "
                                               r"nothing was committed; the file is inconsistent"):
            store.commit_run(db, "r2", attempt, {"joint_labels": [joint]},
                             {"n_items": 1, "n_classes": 2, "modalities": ["image", "text"], "details": {},
                              "model_id": "m1"}, catalog=store.CatalogUpdate(state=(state,)))
    assert (table(db, CATALOG), table(db, "SELECT * FROM label_changes")) == before
    assert table(db, "SELECT count(*) FROM joint_labels WHERE run_id = 'r2'") == [(0,)]


def test_a_run_id_that_later_runs_built_on_is_refused_and_one_that_none_did_composes_its_changes(tmp_path):
    """Re-run after a later run, a night's rows (its added items, say) were replaced by what it changed in the
    catalog the later run left (nothing): a system following label_changes never learnt of them. Such a run id
    is now refused before anything is written; with no run between, a re-run composes with its first attempt."""
    db = str(tmp_path / "out.duckdb")
    commit(db, tmp_path, "r1", {"a": ("hat", 0.9, 1), "b": ("bag", 0.8, 2)})
    assert commit(db, tmp_path, "r2", {"a": ("hat", 0.9, 1), "b": ("bag", 0.8, 2), "c": ("hat", 0.7, 3)},
                  gone=[]) == {"new": {"new_item": 1}}
    assert commit(db, tmp_path, "r3", {}, gone=[]) == {}
    before = (table(db, CATALOG), table(db, "SELECT * FROM label_changes"), table(db, "SELECT * FROM run_attempts"))
    with pytest.raises(ValueError, match=r"^run r2 succeeded before and 1 later run \(r3\) committed since: .* "
                                         r"give this run a new --run-id$"):
        commit(db, tmp_path, "r2", {"c": ("hat", 0.7, 3)}, gone=[])
    assert (table(db, CATALOG), table(db, "SELECT * FROM label_changes"),
            table(db, "SELECT * FROM run_attempts")) == before  # r2's 'new' row for c stands; no attempt registered
    # with no run between, a re-run still composes with its first attempt: r4 deletes b, its re-run keeps that
    assert commit(db, tmp_path, "r4", {}, gone=["b"]) == {"deleted": {"removed": 1}}
    assert commit(db, tmp_path, "r4", {}, gone=[]) == {"deleted": {"removed": 1}}
