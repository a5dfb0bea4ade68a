"""Fitted state as plain arrays (STYLE.md, "Our own house"): every fitted object labelling needs comes back
from its arrays predicting exactly what it predicted, through files that hold no object array; and no
product module imports a pickler."""

import ast
import hashlib
import io
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pairwise_core import MixtureRefiner, PairwiseClassifier, embeddings, make_catalog
from pairwise_core.graph import Neighbourhood, top_classes
from pairwise_core.hierarchy import Level, ParentPowers
from pairwise_core.model import Classifiers, Refinement, Review
from tasks.label import parent_columns
from tasks.models import (
    MANIFEST, ModelMismatch, extend_seal, has_late_part, load_late_part, load_model, load_part, own_file,
    read_own_file, save_part, seal,
)
from test_discriminant import N_FOLDS, catalogs, fit

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("pairwise_core", "tasks", "flows", "sql")
PICKLERS = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "joblib", "shelve"}


def through_files(fitted):
    """``fitted`` written as the model store writes a part (np.savez, JSON) and read back without pickle."""
    arrays, state = fitted.to_arrays()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as data:  # an object array would raise here
        loaded = {key: data[key] for key in data.files}
    assert loaded.keys() == arrays.keys()
    assert not [key for key, value in loaded.items() if value.dtype.hasobject]
    return type(fitted).from_arrays(loaded, json.loads(json.dumps(state)))


def catalog(seed, n_items=600, n_classes=6):
    items, classes = make_catalog(n_items, n_classes, seed=seed)
    return ({m: embeddings(items, f"{m}_embedding") for m in ("image", "text")},
            {m: embeddings(classes, f"{m}_embedding") for m in ("image", "text")},
            classes.column("class_name").to_pylist())


def assert_same_classification(before, after):
    for field in ("base_label", "base_score", "base_margin", "label", "margin", "given_gap", "given_h2h"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field), err_msg=field)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), candidates=st.sampled_from([None, 3]), pair_margin=st.sampled_from([0.0, 0.03]),
       strategy=st.sampled_from(["tourney", "round_robin"]))
def test_a_classifier_from_its_arrays_classifies_exactly_the_same(seed, candidates, pair_margin, strategy):
    xs, classes, _ = catalog(seed)
    x = xs["image"]
    clf = PairwiseClassifier(classes["image"], candidates=candidates, pair_margin=pair_margin, strategy=strategy,
                             seed=seed).fit(x)
    loaded = through_files(clf)
    given_labels = np.random.default_rng(seed).integers(-1, classes["image"].shape[0], len(x))
    assert_same_classification(clf.classify(x, given=given_labels), loaded.classify(x, given=given_labels))
    assert loaded.get_params() == clf.get_params()
    np.testing.assert_array_equal(loaded.pair_counts_, clf.pair_counts_)
    # it is the labelling copy: the pair margin's corrections, which only fitting reads, stay behind
    assert loaded.stats_.correction_keys.size + loaded.stats_.near_items.size == 0
    with pytest.raises(ValueError, match="for labelling"):
        loaded.pair_ratios_


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), d=st.integers(9, 40))
def test_the_pair_masks_travel_as_bits_whatever_the_dimension(seed, d):
    """Packed 8 to a byte (a K = 500 model's 96 MB of boolean masks per modality: 12 MB), including the last
    byte of a dimension that is no multiple of 8, and back as the same booleans."""
    rng = np.random.default_rng(seed)
    classes = rng.normal(size=(5, d))
    x = classes[rng.integers(0, 5, 400)] + rng.normal(scale=0.7, size=(400, d))
    clf = PairwiseClassifier(classes, min_dims=2, seed=seed).fit(x)
    arrays, _ = clf.to_arrays()
    assert "pair_masks" not in arrays and arrays["pair_mask_bits"].shape == (len(clf.pairs_), (d + 7) // 8)
    loaded = through_files(clf)
    assert loaded.pair_masks_.dtype == bool
    np.testing.assert_array_equal(loaded.pair_masks_, clf.pair_masks_)
    assert_same_classification(clf.classify(x), loaded.classify(x))


def test_a_classifier_stored_with_boolean_masks_still_loads():
    """Models stored before the bits (format 1) hold ``pair_masks`` as booleans."""
    xs, classes, _ = catalog(3)
    clf = PairwiseClassifier(classes["text"], candidates=3).fit(xs["text"])
    arrays, state = clf.to_arrays()
    arrays["pair_masks"] = clf.pair_masks_.copy()
    del arrays["pair_mask_bits"]
    old = PairwiseClassifier.from_arrays(arrays, state)
    assert_same_classification(clf.classify(xs["text"]), old.classify(xs["text"]))


def test_a_model_of_a_newer_format_is_refused_in_one_line(tmp_path):
    _, classifiers, refinement, _ = fitted_parts(1)
    save_part(tmp_path, "classifiers", classifiers)
    save_part(tmp_path, "refinement", refinement)
    seal(str(tmp_path))
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    text = json.dumps({**manifest, "format": manifest["format"] + 1}).encode()
    (tmp_path / MANIFEST).write_bytes(text)
    with pytest.raises(ModelMismatch, match=rf"^model m: stored by a newer pairwise \(its files are format "
                                            rf"{manifest['format'] + 1}, this one reads up to {manifest['format']}\)"):
        load_model(tmp_path, hashlib.sha256(text).hexdigest(), "m")


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), n_iter=st.integers(1, 4), eps=st.sampled_from([1e-6, 0.1, 1.0]))
def test_a_refiner_from_its_arrays_gives_exactly_the_same_log_terms(seed, n_iter, eps):
    xs, classes, _ = catalog(seed)
    labels = PairwiseClassifier(classes["text"]).predict_base(xs["text"])
    refiner = MixtureRefiner(classes["text"], n_iter=n_iter, eps=eps).fit(xs["text"], labels)
    loaded = through_files(refiner)
    np.testing.assert_array_equal(loaded.log_terms(xs["text"], labels), refiner.log_terms(xs["text"], labels))
    assert loaded.n_iter_ == refiner.n_iter_ == n_iter


@settings(max_examples=15, deadline=None)
@given(catalogs(), st.sampled_from([0, 5]))
def test_a_discriminant_from_its_arrays_scores_exactly_the_same(catalog, polish_steps):
    xs, present, labels, fold, k = catalog
    model, _ = fit(xs, present, labels, fold, k, polish_steps=polish_steps)
    loaded = through_files(model)
    np.testing.assert_array_equal(loaded.log_posterior(xs, present, fold), model.log_posterior(xs, present, fold))
    assert (loaded.shrinkage, loaded.temperature, loaded.polish_steps) == (
        model.shrinkage, model.temperature, model.polish_steps)


def fitted_parts(seed):
    """A model's three parts fitted on a seeded catalog, as the pipeline's fits make them."""
    xs, classes, names = catalog(seed)
    models = {m: PairwiseClassifier(classes[m], candidates=3, seed=seed).fit(xs[m]) for m in xs}
    refiners = {m: MixtureRefiner(classes[m]).fit(xs[m], models[m].predict(xs[m])) for m in xs}
    rng = np.random.default_rng(seed)
    weights = rng.random((N_FOLDS, 2))
    refinement = Refinement(refiners, weights, weights[::-1].copy(), "gold", rng.random(2))
    gold = models["image"].predict_base(xs["image"])
    fold = np.arange(len(gold)) % N_FOLDS
    discriminant, _ = fit([xs["image"], xs["text"]], np.ones((len(gold), 2), bool), gold, fold, len(names))
    return xs, Classifiers(tuple(names), models), refinement, Review("both", discriminant, rng.random(2), 0.5)


@pytest.mark.parametrize("seed", [0, 7])
def test_a_models_parts_through_the_model_store_files_label_exactly_the_same(tmp_path, seed):
    xs, classifiers, refinement, review = fitted_parts(seed)
    for name, part in (("classifiers", classifiers), ("refinement", refinement), ("review", review)):
        save_part(tmp_path, name, part)
    model = load_model(tmp_path, seal(str(tmp_path)), "m")
    assert model.classifiers.class_names == classifiers.class_names
    assert list(model.classifiers.models) == list(classifiers.models) == list(model.refinement.refiners)
    for m, x in xs.items():
        assert_same_classification(classifiers.models[m].classify(x), model.classifiers.models[m].classify(x))
        labels = classifiers.models[m].predict(x)
        np.testing.assert_array_equal(model.refinement.refiners[m].log_terms(x, labels),
                                      refinement.refiners[m].log_terms(x, labels))
    for field in ("view_weights", "joint_weights", "free_weights"):
        np.testing.assert_array_equal(getattr(model.refinement, field), getattr(refinement, field))
    assert model.refinement.calibration == "gold"
    n = len(xs["image"])
    present, fold = np.ones((n, 2), bool), np.arange(n) % N_FOLDS
    zero_shot = np.log(np.random.default_rng(seed).dirichlet(np.ones(6), n))
    scales = [np.ones(n, np.float32)] * 2
    for got, expected in zip(model.review.judge(zero_shot, list(xs.values()), scales, present, fold),
                             review.judge(zero_shot, list(xs.values()), scales, present, fold), strict=True):
        np.testing.assert_array_equal(got, expected)
    # the files hold no object array: every one loads without pickle, and the class names are fixed-width text
    for path in tmp_path.glob("*.npz"):
        with np.load(path, allow_pickle=False) as data:
            assert not [key for key in data.files if data[key].dtype.hasobject]
    assert load_part(str(tmp_path), "classifiers").to_arrays()[0]["class_names"].dtype.kind == "U"


def test_a_later_fit_takes_the_part_this_process_saved_until_its_file_changes_or_the_model_is_sealed(tmp_path):
    _, classifiers, refinement, _ = fitted_parts(3)
    save_part(tmp_path, "classifiers", classifiers)
    save_part(tmp_path, "refinement", refinement)
    assert load_part(str(tmp_path), "classifiers") is classifiers
    assert load_part(str(tmp_path), "refinement") is refinement
    # a file changed since it was written (another writer): read from the file again
    state = tmp_path / "classifiers.json"
    os.utime(state, ns=(state.stat().st_atime_ns, state.stat().st_mtime_ns + 1_000_000))
    reread = load_part(str(tmp_path), "classifiers")
    assert reread is not classifiers and reread.class_names == classifiers.class_names
    # sealed: the label tasks load the model checked against its hashes, and the fits' copies are let go
    seal(str(tmp_path))
    assert load_part(str(tmp_path), "refinement") is not refinement


def test_a_zero_shot_review_has_no_discriminant_and_judges_by_the_zero_shot_route():
    review = through_files(Review("zero-shot", None, np.array([0.0, 1.0]), 1.0))
    zero_shot = np.log(np.full((3, 4), 0.25))
    route, aware = review.judge(zero_shot, [], [], np.ones((3, 1), bool), np.zeros(3, int))
    assert aware is None and route is zero_shot and review.keep_below == 1.0


def test_an_object_array_is_refused_before_anything_is_written(tmp_path):
    class Holder:
        def to_arrays(self):
            return {"names": np.array(["a", None], dtype=object)}, {}

    with pytest.raises(TypeError, match="object arrays cannot be stored: names"):
        save_part(tmp_path, "classifiers", Holder())
    assert list(tmp_path.iterdir()) == []


def sealed(tmp_path, seed=3):
    _, classifiers, refinement, _ = fitted_parts(seed)
    save_part(tmp_path, "classifiers", classifiers)
    save_part(tmp_path, "refinement", refinement)
    return seal(str(tmp_path))


@pytest.mark.parametrize("change", ["truncate", "flip", "delete"])
@pytest.mark.parametrize("name", ["classifiers.npz", "refinement.json", MANIFEST])
def test_a_truncated_or_tampered_model_is_refused_naming_the_file(tmp_path, change, name):
    content_hash = sealed(tmp_path)
    path = tmp_path / name
    data = path.read_bytes()
    if change == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif change == "flip":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    else:
        path.unlink()
    with pytest.raises(ModelMismatch) as refused:
        load_model(tmp_path, content_hash, "20260101T000000Z-abc123")
    what = "is missing" if change == "delete" else "does not match its recorded hash"
    assert str(refused.value) == f"model 20260101T000000Z-abc123: file {name} {what}; refit with a full run"


def test_a_model_whose_folder_is_gone_is_refused_saying_so(tmp_path):
    (tmp_path / "m").mkdir()
    content_hash = sealed(tmp_path / "m")
    shutil.rmtree(tmp_path / "m")
    with pytest.raises(ModelMismatch) as refused:
        load_model(tmp_path / "m", content_hash, "m1")
    assert str(refused.value) == f"model m1: its folder {tmp_path / 'm'} is missing; refit with a full run"


def test_the_content_hash_is_the_manifests_which_names_every_files_hash(tmp_path):
    content_hash = sealed(tmp_path)
    manifest = (tmp_path / MANIFEST).read_bytes()
    assert hashlib.sha256(manifest).hexdigest() == content_hash
    files = json.loads(manifest)["files"]
    assert sorted(files) == ["classifiers.json", "classifiers.npz", "refinement.json", "refinement.npz"]
    assert all(files[name] == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in files)


def product_modules():
    for package in PRODUCT:
        yield from sorted((ROOT / package).rglob("*.py"))


def test_no_product_module_imports_a_pickler():
    found = []
    modules = list(product_modules())
    assert len(modules) > 40  # the scan reads the product, not an empty folder
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}: {name}" for name in names if name.split(".")[0] in PICKLERS]
    assert found == []


def neighbourhood() -> Neighbourhood:
    values, classes = top_classes(np.eye(3, dtype=np.float32), 2)
    return Neighbourhood(None, np.arange(3, dtype=np.uint64), {"joint": values},
                         {"joint": classes}, {"joint": np.ones(N_FOLDS)},
                         {"k": 2, "alpha": 0.8, "power": 1.0, "seed": 0, "n_classes": 3})


def test_a_part_added_after_the_seal_is_sealed_again_and_read_only_on_demand(tmp_path):
    """The graph's neighbourhood is made after the labelling pass: the model is sealed again, the first seal's
    files unchanged, and the new hash covers it; load_model does not read it, load_late_part checks it."""
    first = sealed(tmp_path)
    assert not has_late_part(tmp_path, first, "m", "neighbourhood")
    assert load_late_part(tmp_path, first, "m", "neighbourhood") is None
    save_part(tmp_path, "neighbourhood", neighbourhood())
    second = extend_seal(str(tmp_path), first, "m")
    assert second != first and has_late_part(tmp_path, second, "m", "neighbourhood")
    np.testing.assert_array_equal(load_late_part(tmp_path, second, "m", "neighbourhood").stored("joint").dense(),
                                  np.eye(3))
    assert load_model(tmp_path, second, "m").classifiers is not None
    stored = tmp_path / "neighbourhood.npz"
    stored.write_bytes(stored.read_bytes()[:-10])
    with pytest.raises(ModelMismatch, match="^model m: file neighbourhood.npz does not match its recorded hash; "
                                            "refit with a full run$"):
        load_late_part(tmp_path, second, "m", "neighbourhood")


def test_a_parts_own_file_is_sealed_with_it_and_read_only_as_sealed(tmp_path):
    """The neighbourhood's index is a file in faiss's format beside the part's arrays: the second seal lists it,
    ``read_own_file`` hands it open to its reader after checking it, and refuses it changed in one line; a model
    without one (stored before) gives None."""
    first = sealed(tmp_path)
    assert read_own_file(tmp_path, first, "m", "neighbourhood", lambda handle: handle.read()) is None
    save_part(tmp_path, "neighbourhood", neighbourhood())
    written = bytes(range(256)) * 1000
    own_file(tmp_path, "neighbourhood").write_bytes(written)
    second = extend_seal(str(tmp_path), first, "m")
    assert "neighbourhood.faiss" in json.loads((tmp_path / MANIFEST).read_bytes())["files"]
    assert read_own_file(tmp_path, second, "m", "neighbourhood", lambda handle: handle.read()) == written
    own_file(tmp_path, "neighbourhood").write_bytes(written[:-1])
    with pytest.raises(ModelMismatch, match="^model m: file neighbourhood.faiss does not match its recorded hash; "
                                            "refit with a full run$"):
        read_own_file(tmp_path, second, "m", "neighbourhood", lambda handle: handle.read())
    own_file(tmp_path, "neighbourhood").unlink()
    with pytest.raises(ModelMismatch, match="^model m: file neighbourhood.faiss is missing"):
        read_own_file(tmp_path, second, "m", "neighbourhood", lambda handle: handle.read())


def test_a_second_seal_refuses_a_file_changed_since_the_first(tmp_path):
    first = sealed(tmp_path)
    save_part(tmp_path, "neighbourhood", neighbourhood())
    (tmp_path / "refinement.json").write_text("{}")
    with pytest.raises(ModelMismatch, match="^model m: file refinement.json does not match its recorded hash"):
        extend_seal(str(tmp_path), first, "m")


def test_the_parent_powers_come_back_from_the_model_store_for_the_parents_they_were_fitted_for(tmp_path):
    _, classifiers, refinement, _ = fitted_parts(5)
    level = Level.of(["p0", "p0", "p1", "p1", "p1", "p2"])
    rng = np.random.default_rng(5)
    refinement = replace(refinement, parent_powers=ParentPowers(level, 1 + rng.random((N_FOLDS, 2)),
                                                                1 + rng.random(N_FOLDS)))
    save_part(tmp_path, "classifiers", classifiers)
    save_part(tmp_path, "refinement", refinement)
    loaded = load_model(tmp_path, seal(str(tmp_path)), "m").refinement
    assert loaded.parent_powers.level == level
    np.testing.assert_array_equal(loaded.parent_powers.view, refinement.parent_powers.view)
    np.testing.assert_array_equal(loaded.parent_powers.joint, refinement.parent_powers.joint)
    assert loaded.parent_powers_for(level) is loaded.parent_powers
    # other parents (a relabel with --model and another classes table), or none: the plain sum
    assert loaded.parent_powers_for(Level.of(["p0", "p0", "p1", "p1", "p2", "p2"])) is None
    assert loaded.parent_powers_for(None) is None


def test_a_refinement_stored_before_the_parent_powers_loads_and_keeps_the_plain_sum(tmp_path):
    """A model stored before the parent calibration: its refinement files hold only the arrays and state that
    code wrote (written here by hand, as it wrote them); it loads, without parent powers, and labels parents
    by the plain sum."""
    _, classifiers, refinement, _ = fitted_parts(6)
    arrays = {"view_weights": refinement.view_weights, "joint_weights": refinement.joint_weights,
              "free_weights": refinement.free_weights}
    states = []
    for i, refiner in enumerate(refinement.refiners.values()):
        refiner_arrays, refiner_state = refiner.to_arrays()
        arrays |= {f"refiner/{i}/{name}": value for name, value in refiner_arrays.items()}
        states.append(refiner_state)
    with (tmp_path / "refinement.npz").open("wb") as handle:
        np.savez(handle, **arrays)
    (tmp_path / "refinement.json").write_text(json.dumps(
        {"modalities": list(refinement.refiners), "refiners": states, "calibration": "gold"}))
    save_part(tmp_path, "classifiers", classifiers)
    loaded = load_model(tmp_path, seal(str(tmp_path)), "m").refinement
    assert loaded.parent_powers is None and loaded.calibration == "gold"
    np.testing.assert_array_equal(loaded.view_weights, refinement.view_weights)
    level = Level.of(["p0", "p0", "p1", "p1", "p1", "p2"])
    assert loaded.parent_powers_for(level) is None
    posterior = np.random.default_rng(6).dirichlet(np.ones(6), 50)
    _, confidence = parent_columns(level, posterior, None)
    np.testing.assert_allclose(confidence.to_numpy(), level.probabilities(posterior).max(axis=1), rtol=1e-6)
    # and a refinement without parent powers writes the same files as that code did
    assert refinement.parent_powers is None
    written, state = refinement.to_arrays()
    assert written.keys() == arrays.keys() and "parent_powers" not in state
