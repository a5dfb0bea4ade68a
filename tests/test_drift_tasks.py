"""The nightly drift tests around the core: the model's drift reference, the label tasks' samples, the staged
drift_metrics rows, and the run log and reports that show them."""

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairwise_core import embeddings, make_catalog
from pairwise_core.drift import AUC_METRIC, MIN_ROWS, SAMPLE_ROWS, SHARE_METRIC
from pairwise_core.model import DriftReference
from tasks import run_log, store
from tasks.drift import DRIFT_SCHEMA, DriftSample, load_drift_sample, measure_drift, sample_rate
from tasks.html_report import build_report
from tasks.models import load_model, save_part, seal
from tasks.report import render_report
from tasks.sources import Plan
from tasks.staging import Staging
from test_model_arrays import fitted_parts, through_files

MODALITIES = ("image", "text")
N_ITEMS = 2400


def reference_of(seed: int = 1, rows: int = 40) -> DriftReference:
    rng = np.random.default_rng(seed)
    return DriftReference({"image": rng.random((rows, 5), np.float32), "a/b c": rng.random((rows - 3, 2),
                                                                                             np.float32)},
                          rng.integers(0, 4, rows))


def assert_same_reference(got: DriftReference, expected: DriftReference) -> None:
    assert list(got.x) == list(expected.x)
    for m in expected.x:
        np.testing.assert_array_equal(got.x[m], expected.x[m])
        assert got.x[m].dtype == np.float32
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert got.labels.dtype == np.int64


def test_a_drift_reference_round_trips_through_plain_arrays():
    reference = reference_of()
    assert_same_reference(through_files(reference), reference)


def model_folder(folder, reference: DriftReference | None) -> dict[str, str]:
    """A sealed model, with a drift reference or (as one stored before the drift tests) without."""
    _, classifiers, refinement, review = fitted_parts(3)
    for name, part in (("classifiers", classifiers), ("refinement", refinement), ("review", review)):
        save_part(folder, name, part)
    if reference is not None:
        save_part(folder, "drift_reference", reference)
    return {"folder": str(folder), "content_hash": seal(str(folder)), "model_id": "m"}


def test_a_model_folder_keeps_its_drift_reference_and_one_without_still_loads(tmp_path):
    reference = reference_of()
    (tmp_path / "with").mkdir()
    (tmp_path / "without").mkdir()
    sealed = model_folder(tmp_path / "with", reference)
    assert_same_reference(load_model(sealed["folder"], sealed["content_hash"], "m").drift_reference, reference)
    older = model_folder(tmp_path / "without", None)
    model = load_model(older["folder"], older["content_hash"], "m")
    assert model.drift_reference is None and model.review is not None


def ids_of(n: int, start: int = 0) -> pa.Array:
    return pa.array([f"item-{i}" for i in range(start, start + n)])


def sampled(batches: list[tuple[pa.Array, np.ndarray]], rate: float, seed: int, path) -> np.ndarray:
    sample = DriftSample(("text",), {"text": 3}, rate, seed)
    for ids, x in batches:
        sample.add("text", ids, x)
    with np.load(sample.save(path), allow_pickle=False) as data:
        return data["text/x"]


def _saved(batch: tuple[pa.Array, np.ndarray], path) -> str:
    sample = DriftSample(("text",), {"text": 3}, 1.0, 7)
    sample.add("text", *batch)
    return sample.save(path)


def test_a_drift_sample_keeps_the_same_items_whatever_the_batching_and_about_its_rate(tmp_path):
    n = 20_000
    x = np.arange(3 * n, dtype=np.float32).reshape(n, 3)  # row i holds 3i, 3i+1, 3i+2: its rows say who
    ids = ids_of(n)
    whole = sampled([(ids, x)], 0.1, 7, tmp_path / "whole.npz")
    cuts = [0, 1, 999, 5000, 5001, 20_000]
    batches = [(ids.slice(a, b - a), x[a:b]) for a, b in zip(cuts, cuts[1:], strict=False)]
    np.testing.assert_array_equal(sampled(batches, 0.1, 7, tmp_path / "batched.npz"), whole)
    assert abs(len(whole) - 0.1 * n) < 4 * np.sqrt(0.1 * 0.9 * n)
    other_seed = sampled([(ids, x)], 0.1, 8, tmp_path / "seed.npz")
    assert set(other_seed[:, 0]) != set(whole[:, 0])
    # bounded: of the share, the SAMPLE_ROWS items with the lowest hashes, the same whatever the batching
    everything = sampled([(ids, x)], 1.0, 7, tmp_path / "all.npz")
    assert len(everything) == SAMPLE_ROWS
    assert set(sampled(batches, 1.0, 7, tmp_path / "all-batched.npz")[:, 0]) == set(everything[:, 0])
    merged = load_drift_sample([DriftSample(("text",), {"text": 3}, 1.0, 7).save(tmp_path / "none.npz")]
                               + [_saved(part, tmp_path / f"part-{k}.npz") for k, part in enumerate(batches)],
                               ("text",))["text"]
    assert set(merged[:, 0]) == set(everything[:, 0])  # the partitions' samples merge into the same one
    empty = DriftSample(("text",), {"text": 3}, 0.5, 0)
    with np.load(empty.save(tmp_path / "empty.npz"), allow_pickle=False) as data:
        assert data["text/x"].shape == (0, 3) and data["text/x"].dtype == np.float32


def test_the_sample_rate_asks_for_twice_the_rows_a_test_reads():
    assert sample_rate(0) == sample_rate(2 * SAMPLE_ROWS) == 1.0
    assert sample_rate(40 * SAMPLE_ROWS) == 0.05


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    """A model whose drift reference is half of a catalog; ``write`` stages the other half, or a skewed part of
    it, as a night's label tasks would."""
    folder = tmp_path_factory.mktemp("night")
    items, classes = make_catalog(N_ITEMS, 6, seed=5)
    names = tuple(classes.column("class_name").to_pylist())
    xs = {m: embeddings(items, f"{m}_embedding") for m in MODALITIES}
    labels = np.array([names.index(label) for label in items.column("label").to_pylist()])
    half = N_ITEMS // 2
    (folder / "model").mkdir()
    sealed = model_folder(folder / "model", DriftReference({m: x[:half] for m, x in xs.items()}, labels[:half]))
    plan = Plan(MODALITIES, {m: x.shape[1] for m, x in xs.items()}, names, N_ITEMS, None)

    def write(name: str, rows: np.ndarray) -> tuple[list[str], list[str]]:
        """Two partitions' drift samples and joint_labels parts of ``rows``."""
        samples, joints = [], []
        for k, part in enumerate(np.array_split(rows, 2)):
            sample = DriftSample(MODALITIES, plan.dims, sample_rate(len(rows)), 0)
            for m in MODALITIES:
                sample.add(m, items.column("item_id").combine_chunks().take(pa.array(part)), xs[m][part])
            samples.append(sample.save(folder / f"{name}-{k}.npz"))
            joints.append(str(folder / f"{name}-{k}.parquet"))
            pq.write_table(pa.table({"label": pa.array(np.array(names)[labels[part]])}), joints[-1])
        return samples, joints

    return sealed, plan, labels, write, folder


def measure(night, name: str, rows: np.ndarray, sealed=None) -> dict:
    model, plan, _, write, folder = night
    samples, joints = write(name, rows)
    staging = Staging(folder / f"staging-{name}")
    staging.root.mkdir()
    return measure_drift.fn(sealed or model, samples, joints, plan, staging, name, 0)


def by_modality(result: dict) -> dict[str, dict]:
    return {row["modality"]: row for row in result["rows"]}


def test_the_other_half_of_the_catalog_has_not_drifted(night):
    result = measure(night, "same", np.arange(N_ITEMS // 2, N_ITEMS))
    rows = by_modality(result)
    assert result["skipped"] is None and list(rows) == [*MODALITIES, "consensus"]
    assert not any(row["drifted"] for row in rows.values())
    assert rows["image"]["metric"] == AUC_METRIC and rows["consensus"]["metric"] == SHARE_METRIC
    assert (rows["text"]["n_reference"], rows["text"]["n_current"]) == (N_ITEMS // 2, N_ITEMS // 2)
    staged = pq.read_table(result["path"])
    assert staged.schema == DRIFT_SCHEMA and set(staged.column("run_id").to_pylist()) == {"same"}
    assert staged.drop_columns("run_id").to_pylist() == result["rows"]


def test_a_night_of_two_classes_has_drifted_in_every_modality_and_in_its_class_shares(night):
    _, _, labels, _, _ = night
    rows = np.arange(N_ITEMS // 2, N_ITEMS)
    result = measure(night, "skewed", rows[np.isin(labels[rows], [0, 1])])
    assert result["skipped"] is None
    assert {m: row["drifted"] for m, row in by_modality(result).items()} == {
        "image": True, "text": True, "consensus": True}


def test_too_few_rows_or_no_reference_give_no_row_and_one_line_why(night, tmp_path):
    few = measure(night, "few", np.arange(N_ITEMS - MIN_ROWS + 1, N_ITEMS))
    assert few["rows"] == [] and few["path"] is None
    assert few["skipped"] == "; ".join(f"{m} has {N_ITEMS // 2:,} reference and {MIN_ROWS - 1} current rows (a "
                                       f"test needs {MIN_ROWS})" for m in (*MODALITIES, "consensus"))
    older = model_folder(tmp_path, None)
    none = measure(night, "older", np.arange(N_ITEMS // 2, N_ITEMS), sealed=older)
    assert none == {"path": None, "rows": [], "skipped": "model m has no drift reference (stored before the drift "
                                                         "tests; a full run stores one)"}


def test_without_scikit_learn_the_embeddings_are_skipped_with_how_to_install_it(night, monkeypatch):
    for name in [name for name in sys.modules if name == "sklearn" or name.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)  # an import of it now fails, as where it is not installed
    result = measure(night, "no-sklearn", np.arange(N_ITEMS // 2, N_ITEMS))
    assert list(by_modality(result)) == ["consensus"]
    assert result["skipped"] == "scikit-learn is not installed (pip install 'pairwise[drift]')"
    assert run_log.drift(result)[-1] == ("Drift not measured: scikit-learn is not installed "
                                         "(pip install 'pairwise[drift]')")


ROWS = [
    {"modality": "gloss", "metric": AUC_METRIC, "value": 0.6121, "threshold": 0.55, "drifted": True,
     "n_reference": 5000, "n_current": 800},
    {"modality": "consensus", "metric": SHARE_METRIC, "value": 0.031, "threshold": 0.1, "drifted": False,
     "n_reference": 5000, "n_current": 12000},
]


def test_the_run_log_has_a_line_per_drift_test():
    assert run_log.drift({"rows": ROWS, "skipped": None}) == [
        "Drift, gloss: domain-classifier AUC 0.612 > 0.550 (5,000 vs 800 rows): drifted",
        "Drift, consensus: class-share JS distance 0.031 <= 0.100 (5,000 vs 12,000 labels): no drift"]
    assert run_log.drift({"rows": [], "skipped": "model m has no drift reference"}) == [
        "Drift not measured: model m has no drift reference"]


def committed(tmp_path, run_id: str, drift_rows: list[dict], details: dict | None = None) -> str:
    db = str(tmp_path / "out.duckdb")
    staged = {}
    if drift_rows:
        path = tmp_path / f"{run_id}-drift.parquet"
        pq.write_table(pa.Table.from_pylist([{"run_id": run_id, **r} for r in drift_rows], schema=DRIFT_SCHEMA), path)
        staged["drift_metrics"] = [str(path)]
    with store.run_lock(db):
        attempt = store.start_run(db, run_id, {"seed": 0}).attempt
        store.commit_run(db, run_id, attempt, staged,
                         {"n_items": 2, "n_classes": 2, "modalities": ["gloss"], "details": details or {}})
    return db


def test_the_reports_show_drift_only_for_a_run_with_drift_rows(tmp_path):
    db = committed(tmp_path, "r1", ROWS)
    committed(tmp_path, "r2", [])
    text = render_report(db, "r1")
    assert "## Drift against the model's fit sample (drift_metrics)" in text
    assert "| gloss     | domain-classifier AUC   | 0.612 | 0.550     | yes     | 5,000" in text
    assert "| consensus | class-share JS distance | 0.031 | 0.100     | no      | 5,000" in text
    page = build_report(db, "r1").html
    assert '<section id="drift"><h2>Drift</h2>' in page and "<td>class-share JS distance</td>" in page
    assert "Drift" not in render_report(db, "r2") and 'id="drift"' not in build_report(db, "r2").html
    with store.reader(db) as con:
        assert con.execute("SELECT count(*) FROM drift_metrics WHERE run_id = 'r1'").fetchone() == (2,)


def test_the_reports_say_which_drift_tests_a_night_did_not_run_and_why(tmp_path):
    """A night of 35 new items (fewer than a test needs) showed no drift section at all, as if it were not a night:
    the reason was in the Prefect log alone, which `pairwise run` does not print."""
    few = (f"gloss has 5,000 reference and 35 current rows (a test needs {MIN_ROWS}); consensus has 5,000 "
           f"reference and 35 current rows (a test needs {MIN_ROWS})")
    db = committed(tmp_path, "few", [], {"drift": {"rows": [], "skipped": few}})
    committed(tmp_path, "some", ROWS[1:], {"drift": {"rows": ROWS[1:], "skipped": "scikit-learn is not installed"}})
    line = f"Drift not measured: {few}"
    assert run_log.drift({"rows": [], "skipped": few}) == [line]  # the run log's line, in both reports
    text = render_report(db, "few")
    assert text[text.index("## Drift against the model's fit sample"):].split("\n")[2] == line
    page = build_report(db, "few").html
    assert f'<section id="drift"><h2>Drift</h2><p class="note">{line}</p></section>' in page
    some = render_report(db, "some")
    assert "| consensus | class-share JS distance |" in some
    assert some.endswith("Drift not measured: scikit-learn is not installed")
    assert "Drift not measured: scikit-learn is not installed" in build_report(db, "some").html


def test_warm_up_imports_the_domain_classifier_on_a_thread_of_its_own():
    """A night starts the drift tests' import as it begins: in a fresh interpreter, scikit-learn is loaded by
    the warm-up thread, not by the caller."""
    code = ("import sys, threading\n"
            "from tasks.drift import warm_up\n"
            "assert 'sklearn.linear_model' not in sys.modules\n"
            "warm_up()\n"
            "[t.join() for t in threading.enumerate() if t.name == 'drift-warm-up']\n"
            "print('sklearn.linear_model' in sys.modules, 'sklearn.model_selection' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["True", "True"]
