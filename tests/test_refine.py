"""The refinement (METHOD.md step 8), the joint posterior and its calibration weights, against plain references."""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pairwise_core import MixtureRefiner, MixtureSums, expected_calibration_error
from pairwise_core.joint import fit_weights, joint_log_posterior, prune_classes
from reference import noisy_catalog, unit_rows


def softmax(scores):
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def reference_em(x, classes, labels, *, n_iter, temperature, anchor_weight, eps, tau):
    """METHOD.md step 8 word for word, on the whole catalog in memory: (means, variance, posterior)."""
    u, c = unit_rows(x), unit_rows(classes)
    y0 = eps * softmax(tau * u @ c.T)
    y0[np.arange(len(u)), labels] += 1 - eps
    z = y0
    for _ in range(n_iter):
        n, s, q = z.sum(axis=0), z.T @ u, z.T @ (u * u)
        norms = np.linalg.norm(s, axis=1, keepdims=True)
        mu = np.where(norms > 0, s / np.where(norms > 0, norms, 1), c)
        var = (q - 2 * mu * s + n[:, None] * mu * mu).sum(axis=0) / n.sum()
        var = np.maximum(var, max(0.01 * var.mean(), 1e-12))  # the documented floor
        loglik = u @ (mu / var).T - 0.5 * (mu * mu / var).sum(axis=1)
        z = softmax(anchor_weight * np.log(y0) + loglik * var.mean() / temperature)
    return mu, var, z


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, d, n = draw(st.integers(2, 6)), draw(st.integers(2, 10)), draw(st.integers(2, 60))
    x, classes = noisy_catalog(rng, k, d, n)
    labels = rng.integers(0, k, n)
    params = dict(n_iter=draw(st.integers(1, 4)), temperature=draw(st.sampled_from([0.01, 0.1, 1.0])),
                  anchor_weight=draw(st.sampled_from([0.5, 1.0])), eps=draw(st.sampled_from([0.05, 0.3, 1.0])),
                  tau=draw(st.sampled_from([1.0, 20.0])))
    return x, classes, labels, params, sorted(set(draw(st.lists(st.integers(1, n - 1), max_size=3))))


# a mean near 0 is a difference of terms of order 1, so its float64 rounding is absolute, not relative: here
# element [0, 3], -0.0233, was 1.2e-10 off the reference (relative 1.3e-9) after two iterations at tau = 20
CANCELLING_MEAN = (
    np.array([[1.19745858, 0.87526136, -0.98059008, 0.70885902, -1.26197771, -2.88184664, 1.56421093, -1.11079692,
               -0.35250489, -0.87311906],
              [-0.48730678, -0.43206776, 0.50593213, -0.14632618, -3.2522912, 1.71393722, -2.9653598, -2.2901309,
               0.41119676, -1.40424647]]),
    np.array([[-1.12022178, 1.40429247, 0.05189715, 0.4954019, -1.59664356, -0.07466642, -0.13607394, 1.60540602,
               -1.06009951, 0.00448355],
              [-1.9634307, -0.1682166, -0.78199213, -1.0093741, -2.40875897, 0.9485903, 0.41157372, -0.73865169,
               0.27779381, -0.62782244],
              [-1.43205126, 1.95429496, 1.98492821, 0.84583642, 0.33738801, 0.33054384, 0.92160792, 0.66562659,
               0.51823786, 0.21243114],
              [0.45572238, 0.33340224, 0.82832642, 0.94432056, 0.68837268, 0.1114493, -1.62649204, -0.0448762,
               -0.53991348, 3.30834234],
              [0.83884939, 0.71118137, 0.37132402, -0.08199042, 0.11382678, -2.46274897, 1.19897927, -0.361749,
               -0.31812944, -0.50551803]]),
    np.array([3, 2]),
    {"n_iter": 2, "temperature": 1.0, "anchor_weight": 0.5, "eps": 0.05, "tau": 20.0},
    [],
)


@given(problems())
@example(CANCELLING_MEAN)
def test_streaming_em_equals_the_in_memory_reference(problem):
    x, classes, labels, params, cuts = problem
    mu, var, z = reference_em(x, classes, labels, **params)
    whole = MixtureRefiner(classes, **params).fit(x, labels)
    streamed = MixtureRefiner(classes, **params)
    for _ in range(params["n_iter"]):  # one map-reduce round per iteration, over chunks
        sums = MixtureSums.zeros(*classes.shape)
        for chunk, chunk_labels in zip(np.split(x, cuts), np.split(labels, cuts), strict=True):
            sums = sums + streamed.sums(chunk, chunk_labels)
        streamed.merge_sums(sums).finalize()
    for model in (whole, streamed):
        np.testing.assert_allclose(model.means_, mu, rtol=1e-9, atol=1e-9)  # means are of order 1: CANCELLING_MEAN
        # a difference of mean squares of unit rows: float64 rounding, carried through the iterations, reached
        # 5e-13 in CANCELLING_MEAN (variances of 5e-5)
        np.testing.assert_allclose(model.var_, var, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(model.predict_proba(x, labels), z, rtol=1e-7, atol=1e-9)  # probabilities


def test_float32_items_give_the_float64_posterior_within_rounding():
    rng = np.random.default_rng(3)
    x, classes = noisy_catalog(rng, 5, 16, 3000)
    labels = rng.integers(0, 5, 3000)
    p64 = MixtureRefiner(classes, temperature=0.05).fit(x, labels).predict_proba(x, labels)
    p32 = MixtureRefiner(classes, temperature=0.05).fit(x.astype(np.float32), labels).predict_proba(
        x.astype(np.float32), labels)
    np.testing.assert_allclose(p32, p64, atol=2e-4)


def test_a_class_without_weight_keeps_its_prompt_and_two_classes_work():
    rng = np.random.default_rng(4)
    x, classes = noisy_catalog(rng, 3, 8, 200)
    labels = np.where(rng.random(200) < 0.5, 0, 1)  # nobody is labelled 2
    # the smallest eps: class 2's anchor weight 5e-324 rounds to 0 in float32, so it has no weight at all
    model = MixtureRefiner(classes, eps=5e-324, n_iter=2).fit(x.astype(np.float32), labels)
    np.testing.assert_allclose(model.means_[2], unit_rows(classes)[2])
    assert set(model.predict_proba(x.astype(np.float32), labels).argmax(axis=1)) <= {0, 1}
    two = MixtureRefiner(classes[:2]).fit(x, labels)
    assert two.predict_proba(x, labels).shape == (200, 2)


def test_the_anchor_holds_labels_and_the_data_can_move_them():
    rng = np.random.default_rng(5)
    x, classes = noisy_catalog(rng, 4, 12, 800)
    truth = np.argmax(unit_rows(x) @ unit_rows(classes).T, axis=1)
    noisy = np.where(rng.random(800) < 0.2, rng.integers(0, 4, 800), truth)
    held = MixtureRefiner(classes, anchor_weight=1.0, eps=0.01, temperature=100.0).fit(x, noisy)
    np.testing.assert_array_equal(held.predict_proba(x, noisy).argmax(axis=1), noisy)
    free = MixtureRefiner(classes, anchor_weight=0.0, temperature=0.05).fit(x, noisy)
    assert (free.predict_proba(x, noisy).argmax(axis=1) == truth).mean() > (noisy == truth).mean()


def test_a_refiner_survives_its_arrays():
    rng = np.random.default_rng(6)
    x, classes = noisy_catalog(rng, 4, 6, 100)
    labels = rng.integers(0, 4, 100)
    model = MixtureRefiner(classes).fit(x, labels)
    loaded = MixtureRefiner.from_arrays(*model.to_arrays())
    np.testing.assert_array_equal(loaded.log_terms(x, labels), model.log_terms(x, labels))


def test_bad_input_and_parameters_say_what_is_wrong():
    classes = np.eye(3)
    with pytest.raises(ValueError, match="temperature must be in"):
        MixtureRefiner(classes, temperature=-1).fit(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match=r"eps must be in \(0, 1\], got 0"):
        MixtureRefiner(classes, eps=0).fit(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="labels must be 3 class indices below 3"):
        MixtureRefiner(classes).fit(np.eye(3), [0, 1, 3])
    with pytest.raises(ValueError, match="all-zero vectors in rows 1"):
        MixtureRefiner(classes).fit(np.array([[1.0, 0, 0], [0, 0, 0]]), [0, 1])
    with pytest.raises(ValueError, match="not fitted"):
        MixtureRefiner(classes).log_terms(np.eye(3), [0, 1, 2])


# -- the joint posterior and its weights ---------------------------------------------------------------------


def test_joint_posterior_sums_present_modalities_only():
    terms = np.log(np.array([[[0.7, 0.3], [0.2, 0.8]], [[0.9, 0.1], [0.5, 0.5]]]))
    present = np.array([[True, True], [True, False]])
    got = np.exp(joint_log_posterior(terms, present, np.array([1.0, 2.0])))
    first = np.array([0.7 * 0.2**2, 0.3 * 0.8**2])
    np.testing.assert_allclose(got, [first / first.sum(), [0.9, 0.1]])
    nobody = np.exp(joint_log_posterior(terms, np.zeros((2, 2), bool), np.ones(2)))
    np.testing.assert_allclose(nobody, 0.5)  # no modality: uniform


@st.composite
def pruning_problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, v, k = draw(st.integers(1, 40)), draw(st.integers(1, 3)), draw(st.integers(2, 12))
    terms = rng.normal(0, 3, (n, v, k))
    present = rng.random((n, v)) < 0.8
    labels = np.where(rng.random(n) < 0.7, rng.integers(0, k, n), -1)
    return terms, present, labels, draw(st.integers(1, k + 2)), rng.random(v) * 2


@given(pruning_problems())
def test_pruned_posterior_is_the_exact_one_with_the_other_classes_at_zero(problem):
    """prune_classes against brute force: each row's top classes by summed present terms (its label forced
    in), and a posterior over them equal to the exact posterior with every other class at -inf; where the
    exact label is among them (always, with equal weights and no label forced), the same label."""
    terms, present, labels, keep, weights = problem
    n, _, k = terms.shape
    pruned, classes, at = prune_classes(terms, present, keep, labels)
    c = min(keep, k)
    assert classes.shape == (n, c) and pruned.shape == (n, terms.shape[1], c)
    np.testing.assert_array_equal(pruned, np.take_along_axis(terms, classes[:, None, :], axis=2))
    score = np.where(present[:, :, None], terms, 0.0).sum(axis=1)
    for i in range(n):
        chosen = set(classes[i].tolist())
        assert len(chosen) == c
        if labels[i] >= 0:
            assert classes[i, at[i]] == labels[i]
        else:
            assert at[i] == -1
        ranked = [j for j in chosen if j != labels[i]]  # the label is in whatever its score
        others = [j for j in range(k) if j not in chosen]
        if ranked and others:
            assert score[i, others].max() <= score[i, ranked].min()
    masked = np.full_like(terms, -np.inf)
    rows = np.arange(n)[:, None]
    masked[rows, :, classes] = terms[rows, :, classes]
    exact = joint_log_posterior(masked, present, weights)  # brute force: every other class at -inf
    got = joint_log_posterior(pruned, present, weights)
    some = present.any(axis=1)  # a row with no modality is uniform over whatever classes it has
    np.testing.assert_allclose(got[some], np.take_along_axis(exact, classes, axis=1)[some], atol=1e-9)
    full = joint_log_posterior(terms, present, np.ones(terms.shape[1])).argmax(axis=1)
    pruned_label = classes[np.arange(n), joint_log_posterior(pruned, present, np.ones(terms.shape[1])).argmax(axis=1)]
    inside = (classes == full[:, None]).any(axis=1) & some
    np.testing.assert_array_equal(pruned_label[inside], full[inside])
    assert inside[(labels < 0) & some].all()  # unforced: the exact label is always a candidate


def test_pruning_every_class_is_the_exact_path():
    terms = np.random.default_rng(3).normal(size=(5, 2, 4))
    labels = np.array([0, -1, 3, 2, -1])
    pruned, classes, at = prune_classes(terms, np.ones((5, 2), bool), 4, labels)
    assert pruned is terms
    np.testing.assert_array_equal(at, labels)
    np.testing.assert_array_equal(classes, np.tile(np.arange(4), (5, 1)))


def known_posteriors(rng, n, sharpness):
    """Logits whose softmax is the true posterior of the labels drawn from it, and the same logits made
    ``sharpness`` times overconfident."""
    logits = rng.normal(0, 2, (n, 4))
    labels = np.array([rng.choice(4, p=p) for p in softmax(logits)])
    return logits, sharpness * logits, labels


def test_fitted_weights_undo_overconfidence_on_known_posteriors():
    rng = np.random.default_rng(7)
    truth, sharp, labels = known_posteriors(rng, 20000, 4.0)
    present = np.ones((len(labels), 1), bool)
    weight = fit_weights(sharp[:, None, :], present, labels)
    assert weight == pytest.approx([0.25], rel=0.05)
    calibrated = np.exp(joint_log_posterior(sharp[:, None, :], present, weight))
    raw = softmax(sharp)
    correct = calibrated.argmax(axis=1) == labels
    assert expected_calibration_error(correct, calibrated.max(axis=1)) < 0.02
    assert expected_calibration_error(correct, raw.max(axis=1)) > 0.1


@given(st.integers(0, 2**32 - 1))
def test_fitted_weights_minimize_the_loss_over_a_grid(seed):
    rng = np.random.default_rng(seed)
    terms = rng.normal(0, 3, (300, 2, 3))
    present = rng.random((300, 2)) < 0.8
    labels = rng.integers(0, 3, 300)
    rows = np.arange(300)

    def loss(a):
        return -joint_log_posterior(terms, present, np.asarray(a))[rows, labels].mean()

    best = fit_weights(terms, present, labels)
    assert (best >= 0).all()
    grid = min(loss((a, b)) for a in np.linspace(0, 2, 41) for b in np.linspace(0, 2, 41))
    assert loss(best) <= grid + 1e-9


def test_cross_view_weights_find_the_temperature_of_independent_witnesses_without_labels():
    # two modalities see the class through independent Gaussian noise: each one's true posterior is known,
    # and its logits are made 4 times too sharp; predicting each other's label, corrected for the other's
    # own noise, must find about 1/4 with no label used
    from pairwise_core.joint import cross_view_weights

    rng = np.random.default_rng(8)
    n, k, signal = 20000, 4, 1.5
    truth = rng.integers(0, k, n)
    logits = np.stack([signal * (np.eye(k)[truth] * signal + rng.normal(0, 1, (n, k))) for _ in range(2)], axis=1)
    own, together = cross_view_weights(4.0 * logits, np.ones((n, 2), bool))
    temperature = together / own**2  # own = sqrt(joint / s_v), joint = 1 / (s_1 + s_2): the documented rule
    assert temperature == pytest.approx([4.0, 4.0], rel=0.15)
    assert together == pytest.approx(1 / temperature.sum())
    for v in range(2):
        p = softmax(4.0 * logits[:, v] / temperature[v])
        assert expected_calibration_error(p.argmax(axis=1) == truth, p.max(axis=1)) < 0.04  # grid steps of 12%
    lone = cross_view_weights(logits[:, :1], np.ones((n, 1), bool))[0]
    assert lone.shape == (1,)  # no witness: the documented default


# -- every accepted option keeps NaN out of the posteriors (issue 20, item 9) ---------------------------------


def bounded(name, inside):
    """Values of a refinement option the flow accepts: its interval's ends (where they belong to it, or the
    nearest value inside), and values drawn in between."""
    interval = MixtureRefiner._constraints[name]
    low = interval.low if interval.left_closed else np.nextafter(interval.low, np.inf)
    ends = [low] + ([interval.high] if interval.high is not None else [1e300])
    return st.one_of(st.sampled_from(ends), inside)


@st.composite
def extreme_problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, d, n = draw(st.integers(2, 5)), draw(st.integers(2, 8)), draw(st.integers(4, 60))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    classes = rng.standard_normal((k, d))
    views = [(classes[rng.integers(0, k, n)] + rng.standard_normal((n, d))).astype(dtype) for _ in range(2)]
    params = {
        "n_iter": draw(st.integers(1, 3)),
        "eps": draw(bounded("eps", st.floats(0, 1, exclude_min=True))),
        "tau": draw(bounded("tau", st.floats(0, 1000))),
        "anchor_weight": draw(bounded("anchor_weight", st.floats(0, 100))),
        "temperature": draw(bounded("temperature", st.floats(1e-4, 1e6))),
    }
    labels = [rng.integers(0, k, n) for _ in range(2)]  # the two views' pairwise labels disagree
    return classes, views, labels, rng.integers(0, k, n), params


@given(extreme_problems())
def test_no_accepted_option_lets_a_nan_into_the_posteriors(problem):
    from pairwise_core.joint import cross_view_weights
    from pairwise_core.refine import log_anchor

    classes, views, labels, gold, params = problem
    unit_classes = unit_rows(classes).astype(views[0].dtype)
    terms = []
    for x, y in zip(views, labels, strict=True):
        # the anchor against METHOD.md's formula in float64, wherever that does not underflow
        cosines = unit_rows(x) @ unit_rows(classes).T
        y0 = params["eps"] * softmax(params["tau"] * cosines)
        y0[np.arange(len(y)), y] += 1 - params["eps"]
        got = log_anchor(unit_rows(x) @ unit_classes.T, y, eps=params["eps"], tau=params["tau"])
        assert np.isfinite(got).all()
        # rounding: the log softmax's own, and tau times the cosines' (a few ulps of the items' dtype)
        tolerance = (1e-5 if x.dtype == np.float32 else 1e-9) + 4 * params["tau"] * np.finfo(x.dtype).eps
        normal = y0 > 1e-300
        np.testing.assert_allclose(got[normal], np.log(y0[normal]), rtol=tolerance, atol=tolerance)

        model = MixtureRefiner(classes, **params).fit(x, y)
        assert np.isfinite(model.means_).all() and np.isfinite(model.var_).all()
        terms.append(model.log_terms(x, y))
        p = model.predict_proba(x, y)
        assert np.isfinite(p).all()
        np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    terms = np.stack(terms, axis=1)
    assert np.isfinite(terms).all()
    present = np.ones(terms.shape[:2], bool)
    present[::3, 1] = False  # some items lack a view
    own, together = cross_view_weights(terms, present)
    fitted = fit_weights(terms, present, gold)
    for weights in (np.ones(2), np.zeros(2), own, together, fitted):
        assert np.isfinite(weights).all()
        joint = joint_log_posterior(terms, present, weights)
        assert np.isfinite(joint).all()
        np.testing.assert_allclose(np.exp(joint).sum(axis=1), 1, rtol=1e-5)


EXTREMES = {  # the accepted ends of every refinement option: the sharpest anchor, and none at all (the largest
    # temperature only makes every posterior the anchor: the property test above covers it)
    "sharpest": {"refine_eps": 5e-324, "refine_tau": 1000, "refine_anchor": 100, "refine_temperature": 1e-4},
    "no-anchor": {"refine_eps": 1, "refine_tau": 0, "refine_anchor": 0, "refine_temperature": 1e-4,
                  "calibration": "label-free"},
}


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("options", EXTREMES.values(), ids=EXTREMES.keys())
def test_a_run_at_the_extreme_accepted_options_writes_no_nan(tmp_path, options):
    import duckdb

    from conftest import write_catalog
    from flows.reclassify import ReclassifyParams, reclassify_catalog
    from pairwise_core import make_catalog

    # weak signal and noisy labels: many items whose modalities disagree, where eps 0 used to give NaN
    items, classes = make_catalog(1200, 5, seed=2, signal_strength=0.1, label_noise=0.1)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = str(tmp_path / "out.duckdb")
    reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=db, gold_column="label",
                                        issues_below=1, **options))
    with duckdb.connect(db, read_only=True) as con:
        if options["refine_anchor"] > 0:  # items whose modalities disagree: where eps 0 gave NaN
            assert con.execute("SELECT count(*) FROM joint_labels WHERE status = 'split'").fetchone()[0] > 0
        checked = 0
        for table in ("item_labels", "joint_labels", "consensus_labels", "agreement_metrics", "calibration_bins",
                      "annotation_issues"):
            columns = [name for name, kind, *_ in con.execute(f"DESCRIBE {table}").fetchall()
                       if kind in ("FLOAT", "DOUBLE")]
            assert columns, table
            for column in columns:
                bad = con.execute(f"SELECT count(*) FILTER (WHERE isnan({column}) OR isinf({column})), count({column})"
                                  f" FROM {table}").fetchone()
                assert bad[0] == 0, f"{table}.{column}: {bad[0]} NaN or Inf"
                checked += bad[1]
        assert checked > 0
        # every labelled item is ranked (issues_below 1): a NaN p_given used to drop its item
        assert con.execute("SELECT count(*) FROM annotation_issues").fetchone()[0] == 1200
        assert con.execute("SELECT count(*) FROM agreement_metrics WHERE metric = 'gold_ece'").fetchone()[0] == 3


def test_log_terms_from_the_classifiers_product_equal_their_own_up_to_rounding():
    from pairwise_core import PairwiseClassifier

    rng = np.random.default_rng(11)
    x, classes = noisy_catalog(rng, 6, 24, 500)
    x = x.astype(np.float32)
    model = PairwiseClassifier(classes).fit(x)
    plain = model.classify(x)
    assert plain.cosines is None and plain.products is None
    refiner = MixtureRefiner(classes).fit(x, plain.label)
    result = model.classify(x, directions=refiner.directions(np.float32))
    # the directions ride along: the tourney's outcome is the same, its scores up to rounding (a wider
    # product may sum in another order)
    np.testing.assert_array_equal(result.label, plain.label)
    np.testing.assert_allclose(result.margin, plain.margin, rtol=1e-5)
    own, given = refiner.log_terms(x, result.label), refiner.log_terms_of(result.products, result.cosines, result.label)
    assert given.dtype == np.float32
    np.testing.assert_allclose(given, own, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="cosines must be of shape"):
        refiner.log_terms_of(result.products, result.cosines[:, :3], result.label)
    with pytest.raises(ValueError, match="directions must be of shape"):
        model.classify(x, directions=np.ones((2, 3), np.float32))


def test_the_tempered_posterior_is_the_softmax_and_its_top_entry():
    from pairwise_core.refine import log_softmax
    from tasks.label import tempered_posterior

    rng = np.random.default_rng(12)
    terms = rng.normal(0, 30, (200, 7)).astype(np.float32)
    weight = np.concatenate([rng.uniform(0, 2, 199), [0.0]])  # a zero weight: the uniform posterior
    top = terms.argmax(axis=1)
    posterior, confidence = tempered_posterior(terms, top, weight)
    expected = np.exp(log_softmax(terms.astype(np.float64) * weight[:, None]))
    np.testing.assert_allclose(posterior, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(confidence, posterior[np.arange(200), top])
    assert tempered_posterior(terms, top, weight, full=False)[0] is None
    np.testing.assert_array_equal(tempered_posterior(terms, top, weight, full=False)[1], confidence)


@given(st.integers(1, 12), st.lists(st.tuples(st.integers(0, 11), st.integers(0, 11)), min_size=0, max_size=80))
def test_swollen_share_counts_the_items_of_classes_past_both_bounds(k, pairs):
    from pairwise_core.refine import SWELL, swollen_share

    refined = np.array([r % k for r, _ in pairs], np.int64)
    anchor = np.array([a % k for _, a in pairs], np.int64)
    n = len(pairs)
    expected = sum(1 for r in refined  # brute force: item by item, its class's counts recounted
                   if (refined == r).sum() > SWELL * (anchor == r).sum() and (refined == r).sum() > SWELL * n / k)
    assert swollen_share(refined, anchor, k) == pytest.approx(expected / n if n else 0.0)


def _image_view(n_items: int, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The synthetic generator's image view: (items, class embeddings, pairwise labels, gold labels)."""
    from pairwise_core import PairwiseClassifier, make_catalog

    items, classes = make_catalog(n_items, n_classes, seed=1)
    names = classes.column("class_name").to_pylist()
    gold = np.array([names.index(label) for label in items.column("label").to_pylist()])
    x = np.array(items.column("image_embedding").to_pylist(), np.float32)
    class_embeddings = np.array(classes.column("image_embedding").to_pylist(), np.float32)
    return x, class_embeddings, PairwiseClassifier(class_embeddings).fit(x).predict(x), gold


def test_a_collapsed_mixture_is_fitted_again_at_a_higher_temperature():
    """At 60 classes the synthetic image view's mixture collapses: a few classes swell and take the weakly
    expressed items, and the refined labels fall far below the pairwise ones. Fitted again at twice the
    temperature, no class swells and the labels come back near the pairwise ones."""
    from pairwise_core.refine import COLLAPSED, fit_without_collapse, swollen_share

    x, class_embeddings, pairwise, gold = _image_view(4000, 60)
    plain = MixtureRefiner(class_embeddings).fit(x, pairwise).log_terms(x, pairwise).argmax(axis=1)
    assert swollen_share(plain, pairwise, 60) > 0.3
    assert (plain == gold).mean() < (pairwise == gold).mean() - 0.2
    refiner, shares = fit_without_collapse(class_embeddings, x, pairwise)
    guarded = refiner.log_terms(x, pairwise).argmax(axis=1)
    assert refiner.temperature == 0.02 and shares[0] > COLLAPSED >= shares[-1] == swollen_share(guarded, pairwise, 60)
    assert (guarded == gold).mean() > (pairwise == gold).mean() - 0.07 > (plain == gold).mean() + 0.15


def test_a_fit_that_did_not_collapse_is_left_as_it_is():
    from pairwise_core.refine import fit_without_collapse

    x, class_embeddings, pairwise, _ = _image_view(3000, 13)
    plain = MixtureRefiner(class_embeddings).fit(x, pairwise)
    refiner, shares = fit_without_collapse(class_embeddings, x, pairwise)
    assert shares == [0.0] and refiner.get_params() == plain.get_params()
    np.testing.assert_array_equal(refiner.means_, plain.means_)
    np.testing.assert_array_equal(refiner.var_, plain.var_)


@pytest.mark.usefixtures("prefect_harness")
def test_a_run_whose_mixture_collapsed_records_and_reports_the_refit(tmp_path):
    import json

    import duckdb

    from conftest import write_catalog
    from flows.reclassify import ReclassifyParams, reclassify_catalog
    from pairwise_core import make_catalog
    from tasks.report import render_report

    items, classes = make_catalog(4000, 60, seed=1)
    items_glob, classes_path = write_catalog(tmp_path / "in", items, classes)
    db = str(tmp_path / "out.duckdb")
    reclassify_catalog(ReclassifyParams(items=items_glob, classes=classes_path, db=db, gold_column="label",
                                        run_id="r"))
    with duckdb.connect(db, read_only=True) as con:
        fits = json.loads(con.execute("SELECT details FROM runs WHERE run_id = 'r'").fetchone()[0])["refinement"]
        accuracy = dict(con.execute("SELECT method, value FROM agreement_metrics WHERE modality_a = 'image' AND "
                                    "modality_b = 'gold' AND metric = 'gold_accuracy'").fetchall())
        stored = json.loads(con.execute("SELECT params FROM models").fetchone()[0])["refinement"]
    assert fits["image"]["temperature"] == 0.02 and fits["image"]["swollen_shares"][0] > 0.3 and stored == fits
    assert accuracy["refined"] > accuracy["pairwise"] - 0.07
    assert "Refinement of image: its mixture collapsed" in render_report(db, "r")
