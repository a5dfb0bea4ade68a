import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core.drift import (
    AUC_METRIC,
    AUC_THRESHOLD,
    MIN_ROWS,
    SHARE_METRIC,
    SHARE_THRESHOLD,
    class_share_shift,
    embedding_drift,
    js_distance,
)

D = 16


def gaussians(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    """Rows around a common centre (3 e_0), moved by ``shift`` along e_1: a change of direction, which
    survives the scaling to unit length."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, D))
    x[:, 0] += 3.0
    x[:, 1] += shift
    return x


def test_two_samples_of_one_distribution_do_not_drift():
    result = embedding_drift(gaussians(0, 800), gaussians(1, 800), seed=0)
    assert result.metric == AUC_METRIC
    assert result.threshold == AUC_THRESHOLD
    assert abs(result.value - 0.5) < 0.05 and not result.drifted


def test_a_mean_shift_drifts():
    result = embedding_drift(gaussians(0, 800), gaussians(1, 800, shift=1.0), seed=0)
    assert result.value > 0.7 and result.drifted


def test_the_threshold_grows_on_a_small_night():
    # 60 current rows: the no-drift AUC spreads by about 0.038, so 0.55 alone would false-alarm
    small = embedding_drift(gaussians(0, 800), gaussians(1, 60), seed=0)
    assert small.threshold > AUC_THRESHOLD and not small.drifted


def test_one_seed_one_result_and_another_seed_another_sample():
    reference, current = gaussians(0, 900), gaussians(1, 900, shift=0.3)
    first = embedding_drift(reference, current, seed=7, sample_rows=500)
    assert embedding_drift(reference, current, seed=7, sample_rows=500) == first
    assert embedding_drift(reference, current, seed=8, sample_rows=500).value != first.value


def test_bad_input_is_refused_with_a_clear_message():
    good = gaussians(0, 100)
    with pytest.raises(ValueError, match=f"current has {MIN_ROWS - 1} rows; a drift test needs at least"):
        embedding_drift(good, good[: MIN_ROWS - 1], seed=0)
    nan = good.copy()
    nan[3, 2] = np.nan
    with pytest.raises(ValueError, match="reference has NaN or Inf in rows 3"):
        embedding_drift(nan, good, seed=0)
    with pytest.raises(ValueError, match="current has 8 dimensions, expected 16"):
        embedding_drift(good, good[:, :8], seed=0)
    with pytest.raises(ValueError, match="seed must be in"):
        embedding_drift(good, good, seed=-1)
    labels = np.zeros(MIN_ROWS, dtype=int)
    with pytest.raises(ValueError, match="current_labels has class id 3, expected < n_classes=3"):
        class_share_shift(labels, labels + 3, 3, seed=0)
    with pytest.raises(ValueError, match="reference_labels has 1 labels"):
        class_share_shift(labels[:1], labels, 3, seed=0)


def brute_js(a: list[int], b: list[int], k: int) -> float:
    p = [a.count(c) / len(a) for c in range(k)]
    q = [b.count(c) / len(b) for c in range(k)]
    m = [(pi + qi) / 2 for pi, qi in zip(p, q)]

    def kl(u: list[float]) -> float:
        return sum(ui * math.log2(ui / mi) for ui, mi in zip(u, m) if ui > 0)

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


labels = st.integers(2, 6).flatmap(lambda k: st.tuples(
    st.just(k), *(st.lists(st.integers(0, k - 1), min_size=MIN_ROWS, max_size=120) for _ in range(2))))


@given(labels, st.integers(0, 2**32 - 1))
def test_class_share_shift_against_brute_force(case, seed):
    k, a, b = case
    result = class_share_shift(np.array(a), np.array(b), k, seed=seed)
    assert result.metric == SHARE_METRIC
    assert result.value == pytest.approx(brute_js(a, b, k), abs=1e-9)
    assert result.threshold >= SHARE_THRESHOLD
    assert result.drifted == (result.value > result.threshold)


def test_js_distance_bounds():
    p = np.array([0.5, 0.5, 0.0, 0.0])
    assert js_distance(p, p) == 0.0
    assert js_distance(p, np.array([0.0, 0.0, 0.3, 0.7])) == pytest.approx(1.0)


def test_class_shares_drift_when_classes_vanish_and_not_when_resampled():
    rng = np.random.default_rng(0)
    reference = rng.integers(0, 10, 5000)
    assert not class_share_shift(reference, rng.integers(0, 10, 2000), 10, seed=0).drifted
    assert class_share_shift(reference, rng.integers(0, 6, 2000), 10, seed=0).drifted


def test_class_shares_do_not_drift_on_a_resample_with_hundreds_of_classes():
    """The reference is a sample too: at K = 330 its 5,000 labels' shares are as noisy as the night's, and a
    null that drew the night alone against them flagged every no-drift split (taxonomy-nouns: 20 of 20)."""
    rng = np.random.default_rng(0)
    k = 330
    weights = rng.dirichlet(np.full(k, 2.0))
    alarms = sum(class_share_shift(rng.choice(k, 5000, p=weights), rng.choice(k, 4000, p=weights), k,
                                   seed=s).drifted for s in range(10))
    assert alarms == 0
    # a quarter of the classes gone from the night is still flagged
    kept = weights * (np.arange(k) >= k // 4)
    assert class_share_shift(rng.choice(k, 5000, p=weights), rng.choice(k, 4000, p=kept / kept.sum()), k,
                             seed=0).drifted
