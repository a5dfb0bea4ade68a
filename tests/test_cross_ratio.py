import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pairwise_core import cross_ratio
from pairwise_core.cross_ratio import ZERO_VARIANCE_RTOL, moments_ratio, spread, spread_ratio, top_n


def brute_force_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The definition: mean over all (x, y) pairs of (x - y)^2 / 2, over sd_A * sd_B."""
    crossvar = ((a[:, None, :] - b[None, :, :]) ** 2 / 2).mean(axis=(0, 1))
    var_a = ((a - a.mean(0)) ** 2).mean(0)
    var_b = ((b - b.mean(0)) ** 2).mean(0)
    var_a = np.where(var_a <= ZERO_VARIANCE_RTOL * (a * a).mean(0), 0.0, var_a)
    var_b = np.where(var_b <= ZERO_VARIANCE_RTOL * (b * b).mean(0), 0.0, var_b)
    sd_product = np.sqrt(var_a * var_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.sqrt(crossvar / sd_product)
    return np.where(sd_product == 0, np.where(crossvar > 0, np.inf, 1.0), ratio)


# values on a coarse grid: a variance is then either exactly zero or far from it
grid_values = st.integers(-64, 64).map(lambda v: v / 8)


def sets(d: int):
    return st.integers(1, 12).flatmap(lambda n: arrays(np.float64, (n, d), elements=grid_values))


@given(st.integers(1, 6).flatmap(lambda d: st.tuples(sets(d), sets(d))))
def test_cross_ratio_equals_brute_force(ab):
    a, b = ab
    got, expected = cross_ratio(a, b), brute_force_ratio(a, b)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(got), finite)
    assert np.array_equal(got[~finite], expected[~finite])
    np.testing.assert_allclose(got[finite], expected[finite], rtol=1e-9)


@given(st.integers(1, 6).flatmap(sets))
def test_cross_ratio_of_a_set_with_itself_is_one(a):
    np.testing.assert_allclose(cross_ratio(a, a), 1.0, rtol=1e-12)


@given(st.integers(1, 6).flatmap(lambda d: st.tuples(sets(d), sets(d))))
def test_cross_ratio_is_at_least_one_and_symmetric(ab):
    a, b = ab
    ratio = cross_ratio(a, b)
    assert (ratio >= 1.0).all()
    np.testing.assert_array_equal(ratio, cross_ratio(b, a))


def test_zero_variance_conventions():
    a = np.array([[1.0, 0.5, 3.0], [1.0, 0.5, 4.0]])
    b = np.array([[1.0, 2.0, 5.0], [1.0, 2.0, 5.0]])
    ratio = cross_ratio(a, b)
    assert ratio[0] == 1.0  # same constant: no evidence
    assert ratio[1] == np.inf  # different constants: separates perfectly
    assert ratio[2] == np.inf  # one side constant, means differ


def test_known_value():
    # A = {0, 2}: mean 1, var 1; B = {4, 6}: mean 5, var 1 -> crossvar = (16 + 2) / 2 = 9, ratio 3
    assert cross_ratio(np.array([0.0, 2.0]), np.array([4.0, 6.0]))[0] == pytest.approx(3.0)


def test_cross_ratio_rejects_bad_input():
    with pytest.raises(ValueError, match="same d"):
        cross_ratio(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match="at least one row"):
        cross_ratio(np.zeros((0, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN or Inf"):
        cross_ratio(np.array([[np.nan]]), np.array([[1.0]]))


@given(
    st.integers(1, 12).flatmap(
        lambda d: st.tuples(
            arrays(np.float64, (4, d), elements=st.sampled_from([0.5, 1.0, 1.05, 1.2, np.inf, np.nan])),
            st.integers(1, d),
        )
    )
)
def test_top_n_keeps_what_a_stable_descending_sort_keeps(case):
    ratios, n = case
    order = np.argsort(-np.nan_to_num(ratios, nan=-np.inf), axis=1, kind="stable")
    expected = np.zeros(ratios.shape, dtype=bool)
    np.put_along_axis(expected, order[:, :n], True, axis=1)
    assert (top_n(ratios, n) == expected).all()


def closed_form_ratio(n_a, sum_a, sumsq_a, n_b, sum_b, sumsq_b):
    """The module docstring's closed form, one expression per quantity, no buffers reused."""
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a, mean_b = sum_a / n_a, sum_b / n_b
        var_a, var_b = sumsq_a / n_a - mean_a * mean_a, sumsq_b / n_b - mean_b * mean_b
        var_a = np.where(var_a <= ZERO_VARIANCE_RTOL * (sumsq_a / n_a), 0.0, var_a)
        var_b = np.where(var_b <= ZERO_VARIANCE_RTOL * (sumsq_b / n_b), 0.0, var_b)
        crossvar = ((mean_a - mean_b) ** 2 + (var_a + var_b)) / 2.0
        sd_product = np.sqrt(var_a) * np.sqrt(var_b)
        ratio = np.maximum(np.sqrt(crossvar / np.where(sd_product == 0.0, 1.0, sd_product)), 1.0)
        return np.where(sd_product == 0.0, np.where(crossvar > 0.0, np.inf, 1.0), ratio)


@given(st.integers(1, 5).flatmap(lambda d: st.lists(st.tuples(sets(d), sets(d)), min_size=1, max_size=4)))
def test_moments_ratio_in_place_is_the_closed_form_bit_for_bit(pairs):
    # spread/spread_ratio reuse their buffers (the mask fit's K = 500 speed): the same bits as the plain closed form
    moments = [[(len(s), s.sum(0), (s * s).sum(0)) for s in pair] for pair in pairs]
    n_a, sum_a, sumsq_a = (np.array([m[0][i] for m in moments], dtype=np.float64) for i in range(3))
    n_b, sum_b, sumsq_b = (np.array([m[1][i] for m in moments], dtype=np.float64) for i in range(3))
    expected = closed_form_ratio(n_a[:, None], sum_a, sumsq_a, n_b[:, None], sum_b, sumsq_b)
    got = moments_ratio(n_a[:, None], sum_a, sumsq_a, n_b[:, None], sum_b, sumsq_b)
    np.testing.assert_array_equal(got, expected)
    side_a = spread(n_a[:, None], sum_a, sumsq_a)
    side_b = spread(n_b[:, None], sum_b, sumsq_b)
    np.testing.assert_array_equal(spread_ratio(*side_a, *side_b), expected)
