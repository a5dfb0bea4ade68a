"""The parent level: a parent's probability is the sum of its children's, and its confidence the sum
sharpened by a fitted power (pairwise_core/hierarchy.py)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core.hierarchy import MIN_POWER, Level, fit_power, sharpen
from pairwise_core.metrics import expected_calibration_error


@st.composite
def posteriors(draw):
    """Probabilities (n, K) with rows summing to 1, and a parent name per class (a parent may have one child)."""
    k = draw(st.integers(1, 8))
    n = draw(st.integers(0, 6))
    weights = np.array(draw(st.lists(st.floats(0, 1), min_size=n * k, max_size=n * k))).reshape(n, k) + 1e-3
    parents = draw(st.lists(st.sampled_from("abcd"), min_size=k, max_size=k))
    return weights / weights.sum(axis=1, keepdims=True), parents


@given(posteriors())
def test_a_parents_probability_is_the_sum_of_its_childrens(case):
    p, parents = case
    level = Level.of(parents)
    summed = level.probabilities(p)
    brute = np.array([[sum(row[k] for k in range(len(parents)) if parents[k] == name) for name in level.names]
                      for row in p]).reshape(len(p), len(level.names))
    np.testing.assert_allclose(summed, brute, atol=1e-12)
    np.testing.assert_allclose(summed.sum(axis=1), 1.0)
    label, confidence = level.labels(p)
    rows = np.arange(len(p))
    # the argmax of the sums (ties may fall either way in rounding)
    np.testing.assert_allclose(brute[rows, label], brute.max(axis=1, initial=0), atol=1e-12)
    np.testing.assert_allclose(confidence, brute[rows, label])


def test_the_parent_label_may_differ_from_the_parent_of_the_leaf_label():
    # two sibling hats share 0.6, a lone bag has 0.4: the leaf label is the bag, the parent label headwear
    level = Level.of(["headwear", "headwear", "bags"])
    label, confidence = level.labels(np.array([[0.3, 0.3, 0.4]]))
    assert level.names[label[0]] == "headwear" and level.index[np.argmax([0.3, 0.3, 0.4])] != label[0]
    np.testing.assert_allclose(confidence, [0.6])
    assert level.names == ("headwear", "bags") and level.index == (0, 0, 1)


@given(posteriors(), st.floats(MIN_POWER, 20), st.sampled_from([np.float64, np.float32]))
def test_a_calibrated_parent_is_never_less_likely_than_one_of_its_children(case, power, dtype):
    """A power below 1 flattens the parents: the confidence is floored at the parent's likeliest child (an
    audit found a parent at 0.5333 over its own child at 0.5414, fitted power 0.99). From 1 up the sharpened
    sum is at least each child's already, and the floor changes nothing."""
    p, parents = case
    p = p.astype(dtype)
    level = Level.of(parents)
    label, confidence = level.labels(p, power)
    summed = level.probabilities(p)
    for row, (j, got) in enumerate(zip(label, confidence, strict=True)):
        top_child = max(p[row, k] for k in range(len(parents)) if level.index[k] == j)
        assert top_child <= got <= 1
        if power >= 1:  # but for rounding, which the floor may lift by an ulp
            assert got == pytest.approx(min(sharpen(summed[row : row + 1], power)[0, j], 1), rel=1e-6)
    assert confidence.dtype == dtype


def test_a_flattened_parent_keeps_its_likeliest_childs_probability():
    # a: 0.54 and 0.0; b: 0.23 and 0.23. Flattened by a power of 0.5, a would get 0.52, under its child
    level = Level.of(["a", "a", "b", "b"])
    p = np.array([[0.54, 0.0, 0.23, 0.23]])
    assert sharpen(level.probabilities(p), 0.5)[0, 0] < 0.54
    label, confidence = level.labels(p, 0.5)
    assert label.tolist() == [0] and confidence.tolist() == [0.54]


@st.composite
def parent_distributions(draw):
    """Parent probabilities (n, P) with rows summing to 1 (some entries 0, some tied), and a power > 0."""
    n, p = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    weights = np.array(draw(st.lists(st.sampled_from([0.0, 1e-30, 1e-6, 0.1, 0.25, 0.5, 1.0]) | st.floats(0, 1),
                                     min_size=n * p, max_size=n * p))).reshape(n, p)
    weights[:, 0] += 1e-3  # no row of zeros
    power = draw(st.floats(MIN_POWER, 20) | st.sampled_from([MIN_POWER, 1.0, 20.0]))
    return weights / weights.sum(axis=1, keepdims=True), power


@given(parent_distributions(), st.booleans())
def test_sharpening_keeps_each_rows_parent_and_gives_a_distribution(case, per_row):
    parents, power = case
    powers = np.full(len(parents), power) if per_row else power
    for dtype in (np.float64, np.float32):
        p = parents.astype(dtype)
        q = sharpen(p, powers)
        label = p.argmax(axis=1)
        rows = np.arange(len(p))
        assert q.dtype == dtype and np.all(q >= 0) and np.all(q <= 1)
        np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5 if dtype == np.float32 else 1e-12)
        assert np.all(q[rows, label] == q.max(axis=1))  # the parent label stays an argmax: a power is monotone
        assert np.all(q[p == 0] == 0)


@given(posteriors())
def test_a_power_of_1_is_the_plain_sum(case):
    p, parents = case
    level = Level.of(parents)
    summed = level.probabilities(p)
    np.testing.assert_allclose(sharpen(summed, 1.0), summed, rtol=1e-12, atol=1e-15)
    plain_label, plain = level.labels(p)
    label, confidence = level.labels(p, np.ones(len(p)))
    np.testing.assert_array_equal(label, plain_label)
    np.testing.assert_allclose(confidence, plain, rtol=1e-12)


def test_the_parent_confidence_is_at_most_1_even_when_the_sum_rounds_above_it():
    # a float32 posterior whose five classes under one parent sum to 1.0000001: the confidence is 1, with or
    # without a power (item_labels.parent_confidence was 1.0000002 in a run)
    p = np.array([[0.2469908893108368, 0.2577774226665497, 0.003916572779417038, 0.23000401258468628,
                   0.2613111734390259]], np.float32)
    level = Level.of(["a"] * 5)
    assert level.probabilities(p)[0, 0] > 1
    assert level.labels(p)[1][0] == 1.0 and level.labels(p, 1.5)[1][0] == 1.0


def test_log_probabilities_sum_each_parents_children_without_underflow():
    level = Level.of(["a", "b", "a", "c"])
    log_p = np.log(np.array([[0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]]))
    np.testing.assert_allclose(level.log_probabilities(log_p), np.log(level.probabilities(np.exp(log_p))))
    far = np.array([[0.0, -2000.0, -3000.0, -1e-300]])  # b's probability is 0 in float64, its log is not -inf
    assert level.log_probabilities(far)[0, 1] == pytest.approx(-2000.0)


def sample(n, n_parents, sharpness, seed):
    """Rows whose parent is drawn from a true distribution t (n, P); what the model reports is t flattened
    by the power ``sharpness`` (t^s renormalized): with s < 1, underconfident, as the sum on real catalogs."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.full(n_parents, 0.3), n)
    labels = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1).clip(max=n_parents - 1)
    return sharpen(truth, sharpness), labels


@pytest.mark.parametrize(("sharpness", "low", "high"), [(0.5, 1.8, 2.2), (1.0, 0.9, 1.1), (2.0, 0.45, 0.55)])
def test_the_fit_recovers_the_power_that_undoes_a_flattened_or_sharpened_sum(sharpness, low, high):
    reported, labels = sample(20_000, 8, sharpness, seed=4)
    power = fit_power(np.log(reported), labels)
    assert low < power < high  # 1 / sharpness: a sharper map (> 1) for an underconfident sum
    ece = lambda q: expected_calibration_error(q.argmax(axis=1) == labels, q.max(axis=1), 10)  # noqa: E731
    if sharpness != 1.0:
        assert ece(sharpen(reported, power)) < ece(reported) / 3


def test_the_fit_of_no_rows_is_the_plain_sum_and_a_power_is_never_0():
    assert fit_power(np.zeros((0, 3)), np.zeros(0, np.int64)) == 1.0
    rng = np.random.default_rng(0)
    noise = np.log(rng.dirichlet(np.ones(4), 500))  # parents that say nothing of the labels
    assert MIN_POWER <= fit_power(noise, rng.integers(0, 4, 500)) < 0.5


@given(posteriors(), st.data())
def test_the_likeliest_child_of_any_parent_is_the_brute_force_maximum(case, data):
    """The floor's top child, for a parent picked at random per row (not only the argmax of the sums): the
    searched rows, whose likeliest class lies under another parent, are checked as well as the others."""
    p, parents = case
    level = Level.of(parents)
    label = np.array(data.draw(st.lists(st.integers(0, len(level.names) - 1), min_size=len(p), max_size=len(p))))
    brute = [max(p[row, k] for k in range(len(parents)) if level.index[k] == label[row]) for row in range(len(p))]
    np.testing.assert_array_equal(level._top_child(p, label), brute)


def test_crossed_names_are_parents_that_are_classes_under_another_parent():
    level = Level.of(["dog", "animal", "books", "books", "animal"])
    assert level.crossed_names(["cat", "dog", "books", "novel", "bird"]) == [("dog", "animal")]
    assert Level.of(["a", "a"]).crossed_names(["x", "y"]) == []
