"""The analyst's report queries of sql/, and the run lifecycle of tasks/store.py, on a hand-made DuckDB file."""

import html
import json
import re
import subprocess
import sys

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import reader_holding
from tasks import store
from tasks.label import LABEL_SCHEMA
from tasks.html_report import build_report
from tasks.report import (_issues_lines, _metrics_table, _parent_shares_table, _shares_table, markdown_table, md_text,
                          n_parents, parent_shares_note, render_report)


def start(db, run_id, params):
    """Register an attempt as a run does, under the run lock: its number."""
    with store.run_lock(db):
        return store.start_run(db, run_id, params).attempt


def commit(db, tmp_path, run_id, labels):
    """labels: item -> (image pairwise, text pairwise, gold)"""
    rows = []
    for item, (image, text, gold) in labels.items():
        for modality, label in (("image", image), ("text", text)):
            rows.append({"run_id": run_id, "item_id": item, "modality": modality, "base_class": "hat",
                         "base_score": 0.5, "base_margin": 0.1, "pairwise_class": label,
                         "pairwise_margin": 0.2, "gold_class": gold})
    path = tmp_path / f"{run_id}.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=LABEL_SCHEMA), path)
    with store.run_lock(db):
        started = store.start_run(db, run_id, {"seed": 0})
        store.commit_run(db, run_id, started.attempt, {"item_labels": [str(path)]},
                         {"n_items": len(labels), "n_classes": 2, "modalities": ["image", "text"], "details": {}})


@pytest.fixture()
def db(tmp_path):
    path = str(tmp_path / "out.duckdb")
    commit(path, tmp_path, "r1", {"a": ("hat", "hat", "hat"), "b": ("bag", "bag", "bag"), "c": ("hat", "bag", "hat")})
    commit(path, tmp_path, "r2", {"a": ("hat", "hat", "hat"), "b": ("hat", "bag", "bag"), "c": ("hat", "bag", "hat")})
    return path


def test_current_labels_after_full_runs_is_the_latest_succeeded_one_s_and_a_failed_run_changes_nothing(db):
    """After full runs every live item was last labelled by the latest one; nights: tests/test_incremental.py."""
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT DISTINCT run_id FROM current_labels").fetchall() == [("r2",)]
    store.fail_run(db, "r3", start(db, "r3", {}), "boom")
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT DISTINCT run_id FROM current_labels").fetchall() == [("r2",)]
        assert con.execute("SELECT status, error FROM runs WHERE run_id = 'r3'").fetchall() == [("failed", "boom")]


def test_label_changes_since_each_item_was_last_labelled(db, tmp_path):
    rows = store.query(db, "report_label_changes", {"run_id": "r2"}).to_pylist()
    assert rows == [{"item_id": "b", "modality": "image", "previous_class": "bag", "current_class": "hat",
                     "previous_run_id": "r1"}]
    assert store.query(db, "report_label_changes", {"run_id": "r1"}).num_rows == 0
    # nights that label a few items each: c is compared with r2, which last labelled it, not with night n1
    commit(db, tmp_path, "n1", {"a": ("bag", "hat", "hat")})
    commit(db, tmp_path, "n2", {"c": ("bag", "bag", "hat")})
    assert store.query(db, "report_label_changes", {"run_id": "n2"}).to_pylist() == [
        {"item_id": "c", "modality": "image", "previous_class": "hat", "current_class": "bag",
         "previous_run_id": "r2"}]


def test_modality_disagreements(db):
    rows = store.query(db, "report_modality_disagreements", {"run_id": "r2"}).to_pylist()
    assert [r["item_id"] for r in rows] == ["b", "c"]
    assert dict(rows[0]["pairwise_class"]) == {"image": "hat", "text": "bag"}


def test_gold_mismatches(db):
    rows = store.query(db, "report_gold_mismatches", {"run_id": "r2"}).to_pylist()
    assert [(r["item_id"], r["modality"]) for r in rows] == [("b", "image"), ("c", "text")]


def test_class_distribution_shares_add_up(db):
    rows = store.query(db, "report_class_distribution", {"run_id": "r2"}).to_pylist()
    pairwise_image = {r["class"]: r["share"] for r in rows if r["method"] == "pairwise" and r["modality"] == "image"}
    assert pairwise_image == {"hat": pytest.approx(1.0)}
    assert sum(r["share"] for r in rows if r["method"] == "base" and r["modality"] == "text") == pytest.approx(1.0)


def test_within_one_reading_a_query_asked_twice_is_answered_once(db):
    """Both reports of a run ask some of the same queries (the class shares scan every label row): within one
    `store.reading` the second asking gets the first's answer; outside it, each asking reads the file."""
    with store.reading(db):
        first = store.query(db, "report_class_distribution", {"run_id": "r2"})
        assert store.query(db, "report_class_distribution", {"run_id": "r2"}) is first
        assert store.query(db, "report_class_distribution", {"run_id": "r1"}) is not first
    again = store.query(db, "report_class_distribution", {"run_id": "r2"})
    assert again is not first and again.equals(first)


def test_commit_is_all_or_nothing(db, tmp_path):
    attempt = start(db, "r4", {})
    with pytest.raises(duckdb.Error):
        store.commit_run(db, "r4", attempt, {"item_labels": [str(tmp_path / "missing.parquet")]},
                         {"n_items": 1, "n_classes": 2, "modalities": [], "details": {}})
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT status FROM runs WHERE run_id = 'r4'").fetchone() == ("running",)
        assert con.execute("SELECT status FROM run_attempts WHERE run_id = 'r4'").fetchone() == ("running",)
        assert con.execute("SELECT count(*) FROM item_labels WHERE run_id = 'r4'").fetchone() == (0,)


READERS_SEE = {
    "runs": "SELECT * FROM runs ORDER BY run_id",
    "current_labels": "SELECT * FROM current_labels ORDER BY ALL",
    "consensus_labels": "SELECT * FROM consensus_labels ORDER BY ALL",
}


def readers_see(db):
    with duckdb.connect(db, read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in READERS_SEE.items()}


def test_a_failed_rerun_keeps_the_earlier_success_and_a_successful_one_replaces_it(db, tmp_path):
    before = readers_see(db)
    store.fail_run(db, "r2", start(db, "r2", {"seed": 1}), "boom")
    assert readers_see(db) == before  # status, finished_at, n_items, params, rows: all of the earlier success
    commit(db, tmp_path, "r2", {"a": ("bag", "bag", "hat")})
    after = readers_see(db)
    assert after["current_labels"] == [("r2", "a", m, "hat", 0.5, pytest.approx(0.1), "bag", pytest.approx(0.2), "hat",
                                        None, None, None, None, None, None) for m in ("image", "text")]
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT attempt, status, error FROM run_attempts WHERE run_id = 'r2' ORDER BY attempt"
                           ).fetchall() == [(1, "succeeded", None), (2, "failed", "boom"), (3, "succeeded", None)]
        assert con.execute("SELECT n_items, params->>'seed' FROM runs WHERE run_id = 'r2'").fetchall() == [(1, "0")]
    # a signal after the commit, before the flow leaves (its failure path records the attempt failed): too late
    store.fail_run(db, "r2", 3, "TerminationSignal")
    assert readers_see(db) == after
    with store.connect(db) as con:  # what commit_run asks when the COMMIT raised (a signal during it): did it commit?
        assert [store._committed(con, "r2", attempt) for attempt in (1, 2, 3, 4)] == [True, False, True, False]
    with duckdb.connect(db, read_only=True) as con:
        assert con.execute("SELECT status, error FROM run_attempts WHERE run_id = 'r2' AND attempt = 3"
                           ).fetchall() == [("succeeded", None)]


def test_under_the_run_lock_every_attempt_left_running_is_abandoned_whatever_its_pid(db):
    import os
    import socket

    # a restarted container: the killed run's pid (here our own, so alive) and host are the next run's
    with duckdb.connect(db) as con:
        con.execute("INSERT INTO runs (run_id, status, started_at, params) VALUES "
                    "('crashed', 'running', now(), '{}'), ('elsewhere', 'running', now(), '{}')")
        con.execute("INSERT INTO run_attempts (run_id, attempt, status, started_at, params, host, pid) VALUES "
                    "('crashed', 1, 'running', now(), '{}', ?, ?), ('elsewhere', 1, 'running', now(), '{}', ?, ?)",
                    [socket.gethostname(), os.getpid(), "another-host", 4242])
    with store.run_lock(db):
        started = store.start_run(db, "next", {})
    assert started.stale == ["crashed", "elsewhere"]
    with duckdb.connect(db, read_only=True) as con:
        runs = dict(con.execute("SELECT run_id, status FROM runs").fetchall())
        errors = dict(con.execute("SELECT run_id, error FROM runs WHERE status = 'failed'").fetchall())
        attempts = con.execute("SELECT run_id, status, error FROM run_attempts WHERE run_id IN ('crashed', "
                               "'elsewhere') ORDER BY run_id").fetchall()
    assert runs["crashed"] == runs["elsewhere"] == "failed" and runs["next"] == "running"
    assert errors["crashed"] == (f"abandoned: its process ended without finishing (pid {os.getpid()} on "
                                 f"{socket.gethostname()}; found by run next)")
    assert attempts == [("crashed", "failed", errors["crashed"]), ("elsewhere", "failed", errors["elsewhere"])]
    with pytest.raises(RuntimeError, match="takes its run lock"):  # only the lock tells that they are abandoned
        store.start_run(db, "unlocked", {})


def test_a_killed_rerun_of_a_succeeded_run_leaves_it_succeeded_and_its_staging_is_removed(db, tmp_path):
    import os
    import socket

    from prefect.logging import disable_run_logger

    from tasks.runs import start_run

    before = readers_see(db)
    with duckdb.connect(db) as con:  # what `pairwise run --run-id r2` killed mid-run leaves behind, its pid
        con.execute("INSERT INTO run_attempts (run_id, attempt, status, started_at, params, host, pid) "
                    "VALUES ('r2', 2, 'running', now(), '{}', ?, ?)", [socket.gethostname(), os.getpid()])
    (tmp_path / "out.duckdb.staging" / "r2" / "pass1").mkdir(parents=True)  # given to the next run by a restart
    with disable_run_logger(), store.run_lock(db):
        assert start_run.fn(db, "r2", {"seed": 2}) == 3  # the next attempt, of the same run id
    assert readers_see(db) == before
    assert list((tmp_path / "out.duckdb.staging" / "r2").iterdir()) == []  # the new attempt's folder, made afresh
    with duckdb.connect(db, read_only=True) as con:
        attempts = con.execute("SELECT attempt, status FROM run_attempts WHERE run_id = 'r2' ORDER BY 1").fetchall()
    assert attempts == [(1, "succeeded"), (2, "failed"), (3, "running")]


def test_a_reader_in_another_process_gets_a_clear_lock_message_or_the_committed_state(db):
    reader = ("import duckdb, sys\n"
              "try:\n"
              "    con = duckdb.connect(sys.argv[1], read_only=True)\n"
              "    print(con.execute('SELECT DISTINCT run_id FROM current_labels').fetchall())\n"
              "except duckdb.IOException as error:\n"
              "    print('locked' if 'Could not set lock' in str(error) else error)\n")
    with duckdb.connect(db):  # a run registering or committing holds the file open
        during = subprocess.run([sys.executable, "-c", reader, db], capture_output=True, text=True, timeout=60)
    after = subprocess.run([sys.executable, "-c", reader, db], capture_output=True, text=True, timeout=60)
    assert during.stdout.strip() == "locked"
    assert after.stdout.strip() == "[('r2',)]"


def test_a_writer_waits_for_a_reader_in_another_process_to_close_the_file(db):
    with reader_holding(db, 3) as reader:
        with store.connect(db) as con:  # it raised at once here (a commit failed after its retries, 5 s)
            assert con.execute("SELECT count(*) FROM runs").fetchone()[0] > 0
        assert reader.wait(timeout=10) == 0  # the reader was not disturbed


def test_a_writer_gives_up_on_a_reader_that_stays_in_one_line_and_is_not_retried(db, monkeypatch):
    from prefect.states import Failed

    from tasks.policy import is_transient

    monkeypatch.setattr(store, "LOCK_WAIT_S", 1.0)
    with reader_holding(db, 30) as reader:
        with pytest.raises(store.DatabaseBusy, match=rf"^{db} is open in another process \(.*\(PID {reader.pid}\)\); "
                                                     r"waited 1 s for it to close the file$"):
            with store.connect(db):
                pass
    # its retries waited the whole time again: 190 s in all
    assert not is_transient(None, None, Failed(data=store.DatabaseBusy("busy")))
    assert is_transient(None, None, Failed(data=OSError("a passing I/O error")))
    assert not is_transient(None, None, Failed(data=store.NoRoom("its disk has 0.0 MB free")))


def test_a_reader_waits_for_a_writer_in_another_process_to_close_the_file(db):
    from tasks.runs import stored_models

    with reader_holding(db, 3, read_only=False) as writer:
        # an incremental night reads its stored models before it takes the run lock: it failed at once with
        # DuckDB's "Could not set lock" while another run committed
        assert stored_models(db) == []
        assert store.query(db, "model_ids").num_rows == 0
        assert writer.wait(timeout=10) == 0


def test_a_reader_gives_up_on_a_writer_that_stays_in_one_line(db, monkeypatch):
    monkeypatch.setattr(store, "LOCK_WAIT_S", 1.0)
    with reader_holding(db, 30, read_only=False) as writer:
        with pytest.raises(store.DatabaseBusy, match=rf"^{db} is open in another process \(.*\(PID {writer.pid}\)\); "
                                                     r"waited 1 s for it to close the file$"):
            store.query(db, "model_ids")


def test_the_terminal_shares_table_shows_the_commonest_classes_and_says_how_many_are_left_out():
    rows = [{"class": f"c{i:02d}", "modality": "image", "method": method, "n_items": i + 1, "share": (i + 1) / 300}
            for i in range(24) for method in ("base", "pairwise")]
    table = _shares_table(rows, limit=5)
    shown = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("| c")]
    assert shown == ["c19", "c20", "c21", "c22", "c23"]  # the most items, listed by name
    assert "The 5 classes with the most items, of 24" in table
    assert "of 24" not in _shares_table(rows, limit=24)


def test_the_class_count_of_the_shares_note_is_of_the_classes_with_items_and_of_all_classes():
    """A night labelled 60 items of a 300-class catalog: the note said "of 117", the classes that got an item,
    beside a header of "classes: 300"."""
    rows = [{"class": f"c{i:02d}", "modality": "joint", "method": "refined", "n_items": i + 1, "share": (i + 1) / 300}
            for i in range(24)]
    assert "The 5 classes with the most items, of the 24 with items (300 classes); all of them" in _shares_table(
        rows, limit=5, n_classes=300)
    assert "The 5 classes with the most items, of 24; all of them" in _shares_table(rows, limit=5, n_classes=24)


def test_the_terminal_parent_shares_are_capped_as_the_class_shares_are():
    """200 parents were 200 rows of the terminal report, while the class shares stop at 20."""
    parents = [{"parent": f"p{i:03d}", "n_items": 300 - i, "share": (300 - i) / 40_000, "mean_confidence": 0.5}
               for i in range(200)]  # the query's order: the most items first
    table = _parent_shares_table(parents, n_parents=250)
    shown = [line.split("|")[1].strip() for line in table.splitlines()[2:] if line.startswith("| p")]
    assert shown == [f"p{i:03d}" for i in range(20)]
    assert table.endswith("\n\nThe 20 parents with the most items, of the 200 with items (250 parents); all of them: "
                          'the query report_parent_shares.sql (`tasks.sql.statement("report_parent_shares")`).')
    assert "with the most items" not in _parent_shares_table(parents[:20], n_parents=20)
    assert n_parents(json.dumps({"parents": {"cat": "animal", "dog": "animal", "rose": "plant"}})) == 2
    assert n_parents(json.dumps({"parents": None})) is None and n_parents(None) is None


def test_a_run_without_metrics_says_so_instead_of_an_empty_table():
    # one modality and no gold column: nothing to compare (the table was its header alone)
    assert _metrics_table([]) == "No metrics for this run."
    assert _metrics_table([], 1, {}).startswith("No metrics for this run: agreement compares two modalities")


def test_a_run_that_labelled_no_item_says_so_instead_of_an_empty_shares_table():
    # an incremental night with nothing new or changed (the table was its `| class |` header alone)
    assert _shares_table([]) == "No items labelled in this run."


@pytest.mark.parametrize(("details", "confidence"), [
    ({"parent_confidence": "calibrated", "calibration": "gold"},
     "that sum calibrated on the gold column's parents (sharpened by a power fitted out of fold)."),
    ({"parent_confidence": "sum", "calibration": "gold"}, "that sum, not calibrated."),
    # a run from before runs recorded it: what its calibration and graph step tell
    ({"calibration": "label-free"}, "that sum, not calibrated."),
    ({"calibration": "gold", "graph": {"k": 10, "items": 900}}, "that sum, not calibrated."),
    ({"calibration": "gold", "graph": {"k": 10, "skipped": "no item to label"}},
     "that sum, calibrated on the gold column's parents where the run's model had powers for them (the run did "
     "not record whether it had)."),
])
def test_the_parent_shares_say_how_their_confidence_was_made(details, confidence):
    """The HTML report said "its confidence is that sum" of runs whose parent confidence was calibrated."""
    assert parent_shares_note(json.dumps(details)) == (
        "consensus_labels.parent_label: the parent whose children's joint probabilities sum highest; its "
        f"confidence is {confidence}")


def test_names_in_the_markdown_report_show_as_written_and_break_nothing():
    """Class names are data: a pipe, a newline, a link, HTML or a terminal escape must neither split a table
    nor reach the Prefect UI or the terminal as markup or control."""
    hostile = ["a|b", "new\nline", "[x](javascript:alert(3))", '"><img src=x onerror=alert(1)>',
               "\x1b[2J\x1b[H\x1b]0;pwned\x07", "dining_table", "back\\slash|"]
    rows = [{"class": name, "modality": "image", "method": method, "n_items": 10, "share": 0.1}
            for name in hostile for method in ("base", "pairwise")]
    table = _shares_table(rows, limit=len(hostile))
    lines = table.splitlines()
    body = [line for line in lines[2:] if line.startswith("| ")]
    assert len(body) == len(hostile)  # no row split by a newline
    assert all(re.sub(r"\\.", "", line).count("|") == lines[0].count("|") for line in body)  # nor by a pipe
    assert all(c.isprintable() for c in table.replace("\n", ""))
    assert not re.search(r"[\[\]<>`]", re.sub(r"\\.", "", table))  # no link, HTML or code unescaped
    assert "| dining_table " in table  # ordinary names stay as they are


def test_a_name_in_the_issues_table_is_escaped_once_as_in_the_shares_table():
    """The issues' cells were escaped twice (by _issues_lines, then by the table): a class named **bold** showed
    with its escaping backslashes escaped too, unlike the same name in the class shares."""
    issue = {"rank": 1, "item_id": "i|1", "given_label": "**bold**", "suggested_label": "<b>", "p_given": 0.01,
             "route": "both", "zero_shot_p_given": 0.02, "zero_shot_label": "a|b", "label_aware_p_given": 0.03,
             "label_aware_label": "**bold**", "agreeing_modalities": 2}
    table = _issues_lines([issue])[0]
    for name in ("**bold**", "<b>", "a|b", "i|1"):
        assert f" {md_text(name)} " in table, name
    assert "\\\\" not in table


def test_counts_in_the_markdown_report_have_thousands_separators_as_in_the_html_one(tmp_path):
    """The Markdown header printed `items: 1200` and the change table `| new | ... | 3000 |`, where the rest of
    the report (and the HTML report, all of it) writes 1,200 and 3,000."""
    db = str(tmp_path / "out.duckdb")
    commit(db, tmp_path, "big", {f"i{n}": ("hat", "bag", "hat") for n in range(1200)})
    assert "- items: 1,200, classes: 2, modalities: image, text" in render_report(db, "big").splitlines()
    assert "<tr><td>items</td><td>1,200</td></tr>" in build_report(db, "big").html
    # the change table's counts are ints: markdown_table writes them as the consensus table's counts are written
    assert markdown_table(pa.table({"change": ["new"], "items": [3000]})).splitlines()[2] == "| new    | 3,000 |"
    assert markdown_table(pa.table({"rank": [1], "flag": [True]})).splitlines()[2] == "| 1    | True |"


@pytest.mark.parametrize("parents", [False, True])
def test_the_issues_note_says_what_the_rank_orders_by(parents):
    """With a parent level the rank orders by p_given^0.75 * p_given_parent^0.25, so rank 1 need not have the
    lowest p_given (a night's top two: 9.0e-57, then 7.3e-58); the note said it had, whatever the level."""
    issues = [{"rank": rank, "item_id": f"i{rank}", "given_label": "hat", "suggested_label": "bag", "p_given": p,
               "route": "both", "zero_shot_p_given": p, "zero_shot_label": "bag", "label_aware_p_given": p,
               "label_aware_label": "bag", "agreeing_modalities": 2, "p_given_parent": parent if parents else None}
              for rank, p, parent in [(1, 9.0e-57, 1.6e-52), (2, 7.3e-58, 2.2e-45)]]
    note = _issues_lines(issues)[-1]
    assert ("Rank 1 has the lowest p_given." in note) is not parents
    assert ("the rank orders by p_given^0.75 * p_parent^0.25" in note) is parents


def test_a_share_reads_0_or_100_percent_only_when_it_is():
    """3 single-modality items of 7,988 read 0.0% and 7,986 of 7,988 at confidence 0.9 or more read 100.0%,
    in the Markdown report and the HTML one alike."""
    from tasks import html_report
    from tasks.report import confidence_summary

    assert [html_report._percent(v) for v in (0, 3 / 7988, 0.0005, 0.25, 7986 / 7988, 1, None)] == [
        "0.0%", "under 0.1%", "0.1%", "25.0%", "over 99.9%", "100.0%", None]
    bands = [{"band": "≥ 0.9", "share": 7986 / 7988, "gold_accuracy": 0.9972},
             {"band": "0.5–0.9", "share": 2 / 7988, "gold_accuracy": 0.5}]
    assert confidence_summary(bands, None, 2, {}).startswith(
        "Joint confidence ≥ 0.9: over 99.9%, 99.7% right; 0.5–0.9: under 0.1%, 50.0% right")


def test_a_rerun_of_a_succeeded_run_says_what_its_label_changes_compare(db, tmp_path):
    """A re-run's label_changes say what changed since before its first attempt; a night's counts are against
    the catalog that attempt left (a night re-run with 5 more items gone said "5 deleted" over label_changes'
    10), and nothing in either report said which."""
    said = "This run id had succeeded before: its label_changes say what changed since before its first attempt."
    assert said not in render_report(db, "r2") and said not in build_report(db, "r2").html
    commit(db, tmp_path, "r2", {"a": ("hat", "hat", "hat"), "b": ("hat", "bag", "bag"), "c": ("bag", "bag", "hat")})
    assert said in render_report(db, "r2").splitlines()
    assert html.escape(said) in build_report(db, "r2").html
    assert said not in render_report(db, "r1")


def test_a_nights_count_of_deleted_items_says_they_are_the_items_gone_from_the_source():
    """A night's sentence said "10 deleted" over a label_changes table of 11 deleted rows: 10 gone from the
    source and one whose every modality was now rejected (cause embedding_changed)."""
    from tasks.report import change_sentences

    night = {"source": 7990, "labelled": 102, "new": 80, "changed": 22, "deleted": 10, "carried_over": 7888,
             "unversioned": 0}
    assert change_sentences(json.dumps({"night": night})) == [
        "Incremental night: 7,990 items in the source; labelled 102 (80 new, 22 changed), 10 gone from the "
        "source, 7,888 carried over unchanged."]


def test_a_collapsed_fit_says_what_its_last_share_counts():
    """The line read "refitted at temperature 0.02, 0.0%": a figure with nothing to say what it is."""
    from tasks.report import collapsed_fits
    fits = {"image": {"swollen_shares": [0.316, 0.0], "temperature": 0.02},
            "text": {"swollen_shares": [0.4, 0.3, 0.2, 0.1], "temperature": 0.08},
            "calm": {"swollen_shares": [0.0], "temperature": 0.01}}
    assert collapsed_fits(fits) == [
        "Refinement of image: its mixture collapsed (31.6% of the sample's refined labels in classes swollen past 3x "
        "their pairwise count); refitted at temperature 0.02, where 0.0% are in swollen classes",
        "Refinement of text: its mixture collapsed (40.0% of the sample's refined labels in classes swollen past 3x "
        "their pairwise count); still 10.0% in swollen classes at temperature 0.08, the highest tried"]


def test_a_band_with_no_gold_labelled_item_says_so_not_a_dash():
    """One modality, 200 gold labels of 9,802 items: the line read "≥ 0.9: 0.6%, - right"."""
    from tasks.report import confidence_summary
    bands = [{"band": "≥ 0.9", "share": 0.006, "gold_accuracy": None},
             {"band": "0.5–0.9", "share": 0.261, "gold_accuracy": 0.562}]
    line = confidence_summary(bands, None, 1, {"gold_column": "label"})
    assert line == "Joint confidence ≥ 0.9: 0.6%, none with a gold label; 0.5–0.9: 26.1%, 56.2% right (against gold)."


def commit_joint(db, tmp_path, run_id, rows):
    """rows: (item, label, confidence, gold) of joint_labels, committed as a run does."""
    from tasks.label import JOINT_SCHEMA
    path = tmp_path / f"{run_id}-joint.parquet"
    pq.write_table(pa.Table.from_pylist([
        {"run_id": run_id, "item_id": item, "label": label, "confidence": confidence, "status": "agreed",
         "agreeing_modalities": 2, "n_modalities": 2, "gold_class": gold} for item, label, confidence, gold in rows
    ], schema=JOINT_SCHEMA), path)
    with store.run_lock(db):
        started = store.start_run(db, run_id, {"seed": 0, "gold_column": "label"})
        store.commit_run(db, run_id, started.attempt, {"joint_labels": [str(path)]},
                         {"n_items": len(rows), "n_classes": 4, "modalities": ["image", "text"], "details": {}})


def labelled(label, n, confidence, n_right, start=0):
    """n joint labels of one class at one confidence, the first n_right right against gold."""
    return [(f"{label}-{start + i}", label, confidence, label if i < n_right else "other") for i in range(n)]


def test_a_class_far_more_confident_than_right_is_named_in_both_reports_and_the_log(tmp_path):
    """The run's ECE averages over classes: a class that draws other classes' items (WordNet nouns: 'artifact',
    47% confident, 9% right) hides behind classes right more often than they say. Too few gold labels, or a
    gap within sampling, names nothing."""
    from tasks.report import class_reliability
    from tasks.run_log import overconfident_classes
    db = str(tmp_path / "out.duckdb")
    commit_joint(db, tmp_path, "r1", labelled("sink", 100, 0.9, 10) + labelled("fine", 100, 0.8, 76)
                 + labelled("few", 10, 0.9, 0) + labelled("shy", 100, 0.3, 90)
                 + labelled("close", 20, 0.5, 4))  # 0.5 against 0.2: 0.3 apart, but 2.7 standard errors
    reliability = class_reliability(db, "r1")
    assert [row["class"] for row in reliability.over] == ["sink"] and reliability.n_under == 1
    assert reliability.over[0]["gold_accuracy"] == pytest.approx(0.1)
    markdown = render_report(db, "r1")
    assert "1 class of the joint label is far more confident than right against gold" in markdown
    assert "1 other class is right more often than confident" in markdown
    assert re.search(r"\| sink +\| 100 +\| 0\.900 +\| 10\.0% +\| other 90\.0% +\|", markdown)
    assert not re.search(r"\| (fine|few|shy|close) ", markdown.split("far more confident")[1].split("##")[0])
    page = build_report(db, "r1").html
    assert "<td>sink</td><td>100</td><td>0.900</td><td>10.0%</td><td>other 90.0%</td>" in page
    assert overconfident_classes(reliability) == (
        "Joint labels far more confident than right against gold in 1 class: sink (100 items with gold: 0.90 "
        "confident, 10.0% right; gold when wrong mostly other (90.0%)); a confidence threshold lets their errors "
        "through (the report lists them)")


def test_without_gold_labels_no_class_is_judged(tmp_path):
    from tasks.report import class_reliability
    db = str(tmp_path / "out.duckdb")
    commit_joint(db, tmp_path, "r1", [(f"i{i}", "sink", 0.9, None) for i in range(50)])
    assert class_reliability(db, "r1") is None
    assert "more confident than right" not in render_report(db, "r1")


def test_a_long_list_of_classes_shows_the_most_excess_errors_first_and_says_where_the_rest_are(tmp_path):
    from tasks.report import SHOWN_UNRELIABLE, class_reliability, reliability_left_out, reliability_table
    db = str(tmp_path / "out.duckdb")
    rows = []
    for k in range(SHOWN_UNRELIABLE + 2):  # class k: 40 + 10 k items, 0.9 confident, none right
        rows += labelled(f"c{k:02d}", 40 + 10 * k, 0.9, 0, start=1000 * k)
    commit_joint(db, tmp_path, "r1", rows)
    reliability = class_reliability(db, "r1")
    shown = [row[0] for row in reliability_table(reliability, None)[1]]
    assert shown == [f"c{k:02d}" for k in range(SHOWN_UNRELIABLE + 1, 1, -1)]
    assert reliability_left_out(reliability) == (
        f"The {SHOWN_UNRELIABLE} with the most errors beyond their confidence, of {SHOWN_UNRELIABLE + 2}; every "
        "class's figures: the query report_class_reliability.sql "
        "(`tasks.sql.statement(\"report_class_reliability\")`).")


def test_with_no_class_too_confident_the_report_says_so_in_a_sentence(tmp_path):
    from tasks.report import class_reliability, reliability_sentence
    db = str(tmp_path / "out.duckdb")
    commit_joint(db, tmp_path, "r1", labelled("fine", 100, 0.8, 80) + labelled("shy", 100, 0.3, 90, start=100))
    reliability = class_reliability(db, "r1")
    assert reliability.over == [] and reliability.n_under == 1
    assert reliability_sentence(reliability) == ("No class's joint labels are far more confident than right against "
                                                 "gold (1 class is right more often than confident).")
    assert "| fine " not in render_report(db, "r1").split("(1 class is right")[1]


def test_the_class_table_says_where_a_class_draws_its_items_from_and_its_parent(tmp_path):
    """'gold when wrong': the commonest gold classes of a class's wrong labels, as shares of its items (WordNet
    taxonomy: 'variety meat', 10% right, took 53% of its items from 'cut'); with parents, each class's parent."""
    from tasks.report import class_reliability, reliability_table
    db = str(tmp_path / "out.duckdb")
    rows = [(f"s{i}", "sink", 0.9, "sink" if i < 10 else ("cut" if i < 70 else "dish" if i < 90 else f"g{i}"))
            for i in range(100)]
    commit_joint(db, tmp_path, "r1", rows)
    details = json.dumps({"parents": {"sink": "food", "cut": "food", "dish": "food"}})
    headers, table = reliability_table(class_reliability(db, "r1"), details)
    assert headers == ["class", "parent", "items with gold", "mean confidence", "right against gold",
                       "gold when wrong"]
    assert table == [["sink", "food", 100, pytest.approx(0.9), "10.0%", "cut 60.0%, dish 20.0%, g90 1.0%"]]
