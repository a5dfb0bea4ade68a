import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core import PairStats, PairwiseClassifier
from pairwise_core.pair_stats import union_keys


def brute_force_stats(x: np.ndarray, classes: np.ndarray, score_floor, pair_margin):
    """Membership item by item, straight from METHOD.md step 2: dense (count, sum, sumsq)."""
    k, d = classes.shape
    count, total, total_sq = np.zeros((k, k), np.int64), np.zeros((k, k, d)), np.zeros((k, k, d))
    cu = classes / np.linalg.norm(classes, axis=1, keepdims=True)
    for row in x:
        unit = row / np.linalg.norm(row)
        scores = cu @ unit
        a = int(np.argmax(scores))
        if score_floor is not None and scores[a] < score_floor:
            continue
        for b in range(k):
            if b == a or abs(scores[a] - scores[b]) >= pair_margin:
                count[a, b] += 1
                total[a, b] += unit
                total_sq[a, b] += unit * unit
    return count, total, total_sq


@st.composite
def catalogs(draw):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    k, d, n = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 60))
    classes = rng.standard_normal((k, d))
    x = rng.standard_normal((n, d))
    cuts = sorted(draw(st.lists(st.integers(1, n), max_size=4)))
    return x, classes, cuts


@given(catalogs(), st.sampled_from([0.0, 0.05, 0.3]), st.sampled_from([None, -0.2, 0.3]))
def test_chunk_statistics_merge_into_whole_statistics(catalog, pair_margin, score_floor):
    x, classes, cuts = catalog
    clf = PairwiseClassifier(classes, pair_margin=pair_margin, score_floor=score_floor)
    whole = clf.pair_stats(x)
    merged = PairStats.zeros(*classes.shape)
    for chunk in np.split(x, cuts):
        if len(chunk):
            merged = merged + clf.pair_stats(chunk)
    expected = brute_force_stats(x, classes, score_floor, pair_margin)
    for got in (whole.dense(), merged.dense()):
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-12, atol=1e-12)


def test_partial_fit_over_chunks_equals_fit():
    rng = np.random.default_rng(3)
    classes, x = rng.standard_normal((6, 20)), rng.standard_normal((900, 20))
    whole = PairwiseClassifier(classes, min_dims=3).fit(x)
    streamed = PairwiseClassifier(classes, min_dims=3)
    for chunk in np.array_split(x, 7):
        streamed.partial_fit(chunk)
    streamed.finalize()
    np.testing.assert_array_equal(streamed.masks_, whole.masks_)
    np.testing.assert_array_equal(streamed.predict(x), whole.predict(x))


def test_merge_rejects_mismatched_shapes():
    import pytest

    with pytest.raises(ValueError, match="cannot merge"):
        PairStats.zeros(3, 4) + PairStats.zeros(3, 5)


@given(st.lists(st.lists(st.integers(0, 24), max_size=30), min_size=1, max_size=4), st.sampled_from([5, 5000]))
def test_union_keys_is_the_sorted_union_whether_flagged_or_sorted(parts, n_classes):
    # K = 5 marks a bitmap, K = 5000 (25 million flags) sorts instead: both must give the union
    arrays = [np.asarray(part, dtype=np.int64) for part in parts]
    expected = np.unique(np.concatenate(arrays))
    got = union_keys(arrays, n_classes)
    assert got.dtype.kind == "i" and got.tolist() == expected.tolist()
