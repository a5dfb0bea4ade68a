"""Against a real `prefect server start`: a flow run, its artifacts and logs (the deployment: test_nightly.py)."""

import json
import re
import subprocess
import sys
from pathlib import Path
from uuid import UUID

import duckdb
import pyarrow as pa
import pytest

from conftest import api, write_catalog
from pairwise_core import make_catalog
from tasks.run_log import count



@pytest.fixture(scope="module")
def server_run(server, tmp_path_factory):
    """One real run against the server, of a catalog with two bad rows and two gold values that name no class:
    (API URL, flow run id, DuckDB file)."""
    url, env = server
    tmp_path = tmp_path_factory.mktemp("server-run")
    items, classes = make_catalog(800, 4, seed=2)
    rows = items.to_pylist()
    rows[5]["image_embedding"] = None
    rows[7]["text_embedding"] = [float("nan")] * 384
    rows[11]["label"] = rows[12]["label"] = "legacy-code"
    items_glob, classes_path = write_catalog(tmp_path, pa.Table.from_pylist(rows, schema=items.schema), classes,
                                             n_files=2)
    db = tmp_path / "out.duckdb"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("pairwise")), "run", "--items", items_glob, "--classes", classes_path,
         "--db", str(db), "--gold-column", "label", "--run-id", "server-test"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Catalog:" not in result.stderr and "INFO" not in result.stderr  # the run's logs go to the API only
    assert GOLD_OUTSIDE in result.stderr.splitlines()  # said on the console too, before the run starts
    # the server is shared by the session: other tests leave their runs there too
    runs = api(url, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 200})
    mine = [r for r in runs if r["parameters"].get("params", {}).get("run_id") == "server-test"]
    assert len(mine) == 1 and mine[0]["state"]["type"] == "COMPLETED"
    assert mine[0]["name"] == "server-test"  # the flow run is named after the run id
    return url, mine[0]["id"], db


GOLD_OUTSIDE = ('Gold column label names no class in 2 of 800 labelled items (0.2%; values such as "legacy-code"): '
                "those items count as wrong in the gold metrics, and the review leaves them out")


def test_a_run_against_the_server_completes_with_artifacts(server_run):
    url, flow_run_id, _ = server_run
    artifacts = api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}})
    kinds = {(a["key"], a["type"]) for a in artifacts}
    assert ("pairwise-run-summary", "table") in kinds
    assert ("pairwise-agreement-report", "markdown") in kinds
    progress = [a for a in artifacts if a["type"] == "progress"]
    assert progress and progress[0]["data"] == 100.0
    # the summary reads as the run's log does, not as Python's reprs (['image', 'text'], {'new': {...}})
    summary = next(a for a in artifacts if a["key"] == "pairwise-run-summary")["data"]
    values = {row["field"]: row["value"] for row in json.loads(summary)}
    assert values["modalities"] == "image, text" and values["n_items"] == "800"
    assert values["changes"] == "800 new (new item)", values["changes"]
    assert re.fullmatch(r"\d+\.\d\d s", values["pass2_s"]), values["pass2_s"]


def test_the_flow_run_logs_a_line_per_phase_with_its_figures(server_run):
    """What the UI's Logs tab shows, read back through Prefect's client, against the run's own tables."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, flow_run_id, db = server_run
    with temporary_settings({PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
                                sort=LogSort.TIMESTAMP_ASC)
    lines = [log.message for log in logs if log.task_run_id is None]  # the flow's own, not the tasks'
    with duckdb.connect(str(db), read_only=True) as con:
        def one(sql):
            return con.execute(sql).fetchall()

        masks = one("SELECT modality, count(*), median(n_dims), min(n_dims), max(n_dims), count_if(fallback) "
                    "FROM pair_masks GROUP BY modality ORDER BY modality")
        metrics = {(m, a, method): v for m, a, method, v in one(
            "SELECT metric, modality_a, method, value FROM agreement_metrics WHERE modality_b IN ('text', 'gold')")}
        details = json.loads(one("SELECT details FROM runs")[0][0])
        review = details["review"]
        n_issues, n_doubtful = one("SELECT count(*), coalesce(count_if(p_given < 0.5), 0) FROM annotation_issues")[0]
    assert details["gold"] == {"labelled": 800, "outside_classes": 2, "outside_examples": ["legacy-code"],
                               "unnamed_classes": []}
    # counts the catalog does not fix come with their noun as the log words them (tests/test_run_log.py)
    figures = "; ".join(f"{m} {n} pairs, median {med:g} dims ({lo}-{hi}), {count(fb, 'fallback')} to all dims"
                        for m, n, med, lo, hi, fb in masks)

    weights = review.get("weights")
    weighted = (f"; weights label-aware {weights['label_aware']:.2f}, zero-shot {weights['zero_shot']:.2f}"
                if weights else "")

    def steps(metric, modality):
        return " \u2192 ".join(f"{metrics[metric, modality, method]:.3f}" for method in ("base", "pairwise", "refined"))

    expected = [
        re.escape("Catalog: 800 items in 2 partitions (chunk size 50,000), 4 classes; modalities image (512-d), "
                  "text (384-d); gold column label"),
        re.escape(GOLD_OUTSIDE),
        r"Pass 1/2, pair statistics: 800 items in 2 partitions, [\d.]+ s \([\d,]+ items/s\)",
        rf"Masks fitted in [\d.]+ s: {re.escape(figures)}",
        r"Refinement fitted in [\d.]+ s on a seeded sample \(100.0% of the rows read\); confidence fitted .*",
        r"Review fitted in [\d.]+ s: " + re.escape(f"route {review['route']} (asked: auto) on "
                                                    f"{count(review['sample_rows'], 'labelled sample row')}{weighted}"),
        r"Pass 2/2, labels: 800 items in 2 partitions, [\d.]+ s \([\d,]+ items/s\)",
        re.escape("Rejected rows (item, modality): 2: image 1 (null embedding); "
                  "text 1 (NaN, Inf or null value in embedding)"),
        re.escape(f"Agreement (weighted F1), base \u2192 pairwise \u2192 refined: image vs text "
                  f"{steps('agreement_f1_weighted', 'image')}"),
        re.escape(f"Gold accuracy, base \u2192 pairwise \u2192 refined: image {steps('gold_accuracy', 'image')}; "
                  f"text {steps('gold_accuracy', 'text')}; "
                  f"joint {metrics['gold_accuracy', 'joint', 'refined']:.3f} (refined)"),
        rf"Review: {count(n_issues, 'item')} ranked by p_given in [\d.]+ s \(annotation_issues keeps the labelled "
        rf"items with p_given < 0.5\); "
        rf"{count(n_doubtful, 'given label')} more likely wrong than right \(p_given < 0.5\)",
        re.escape("Label changes: 800 new (new item)"),  # the catalog's first run: every item is new
        r"Run server-test committed in [\d.]+ s: stage [\d.]+ s, pass1 [\d.]+ s, fit [\d.]+ s, refine [\d.]+ s, "
        r"fit_review [\d.]+ s, pass2 [\d.]+ s, metrics [\d.]+ s, review [\d.]+ s",
        re.escape(f"HTML report: {Path(f'{db}.reports/server-test.html').resolve()}"),
    ]
    phase_lines = [line for line in lines if not line.startswith(("Beginning flow run", "Finished in state"))]
    assert len(phase_lines) == len(expected), phase_lines
    for pattern, line in zip(expected, phase_lines, strict=True):
        assert re.fullmatch(pattern, line), (pattern, line)




def test_a_night_that_reads_nothing_ends_its_progress_at_100(server, tmp_path):
    url, env = server
    items, classes = make_catalog(600, 4, seed=3)
    items_glob, classes_path = write_catalog(tmp_path, items, classes, n_files=2)
    base = [str(Path(sys.executable).with_name("pairwise")), "run", "--items", items_glob, "--classes", classes_path,
            "--db", str(tmp_path / "out.duckdb"), "--quiet"]
    for extra in (["--run-id", "progress-full"], ["--run-id", "progress-night", "--model", "latest", "--incremental"]):
        result = subprocess.run(base + extra, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
    runs = api(url, "/flow_runs/filter", {"sort": "START_TIME_DESC", "limit": 200})
    night = next(r for r in runs if r["parameters"].get("params", {}).get("run_id") == "progress-night")
    artifacts = api(url, "/artifacts/filter", {"artifacts": {"flow_run_id": {"any_": [night["id"]]}}})
    assert [a["data"] for a in artifacts if a["type"] == "progress"] == [100.0]
