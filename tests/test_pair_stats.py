import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core import PairStats, PairwiseClassifier, classifier
from pairwise_core.cross_ratio import moments_ratio
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


def too_close(x: np.ndarray, classes: np.ndarray, score_floor, pair_margin):
    """The (item, b) pairs the pair margin takes out, item by item: (item indices, keys a * K + b)."""
    k = classes.shape[0]
    unit, cu = x / np.linalg.norm(x, axis=1, keepdims=True), classes / np.linalg.norm(classes, axis=1, keepdims=True)
    items, keys = [], []
    for i, scores in enumerate(unit @ cu.T):
        a = int(np.argmax(scores))
        if score_floor is not None and scores[a] < score_floor:
            continue
        for b in range(k):
            if b != a and abs(scores[a] - scores[b]) < pair_margin:
                items.append(i)
                keys.append(a * k + b)
    return np.array(items, dtype=np.int64), np.array(keys, dtype=np.int64)


def correction_bytes(stats: PairStats) -> int:
    fields = ("correction_keys", "correction_count", "correction_sum", "correction_sumsq",
              "near_items", "near_keys", "near_rows")
    return sum(getattr(stats, name).nbytes for name in fields)


def check_against_brute_force(stats: PairStats, x, classes, score_floor, pair_margin):
    """Moments of every ordered pair as METHOD.md step 2 defines them, and the stated memory bound:
    the corrections never take more bytes than the smaller of their two exact forms."""
    expected = brute_force_stats(x, classes, score_floor, pair_margin)
    got = stats.dense()
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got[2], expected[2], rtol=1e-12, atol=1e-12)
    items, keys = too_close(x, classes, score_floor, pair_margin)
    d = x.shape[1]
    summed = np.unique(keys).size * (2 * d * 8 + 16)  # key, count, sum and sumsq per key
    per_item = np.unique(items).size * d * 8 + keys.size * 16  # each item once, (key, row) per entry
    assert correction_bytes(stats) <= min(summed, per_item)
    assert np.all(np.diff(stats.correction_keys) > 0) and np.all(np.diff(stats.near_keys) >= 0)
    assert stats.near_items.shape[0] <= np.unique(items).size


@st.composite
def catalogs(draw, max_classes=5, max_dims=6, max_items=60):
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    k, d, n = draw(st.integers(1, max_classes)), draw(st.integers(1, max_dims)), draw(st.integers(1, max_items))
    classes = rng.standard_normal((k, d))
    x = rng.standard_normal((n, d))
    cuts = sorted(draw(st.lists(st.integers(1, n), max_size=4)))
    return x, classes, cuts


@given(catalogs(), st.sampled_from([0.0, 0.05, 0.3]), st.sampled_from([None, -0.2, 0.3]),
       st.sampled_from([None, 2, 3]))
def test_chunk_statistics_merge_into_whole_statistics(catalog, pair_margin, score_floor, candidates):
    x, classes, cuts = catalog
    clf = PairwiseClassifier(classes, pair_margin=pair_margin, score_floor=score_floor, candidates=candidates)
    whole = clf.pair_stats(x)
    merged = PairStats.zeros(*classes.shape)
    for chunk in np.split(x, cuts):
        if len(chunk):
            merged = merged + clf.pair_stats(chunk)
    for got in (whole, merged, PairStats.merge(clf.pair_stats(chunk) for chunk in np.split(x, cuts) if len(chunk))):
        check_against_brute_force(got, x, classes, score_floor, pair_margin)
        np.testing.assert_array_equal(got.met, whole.met)


@given(catalogs(max_classes=30, max_dims=40, max_items=200), st.sampled_from([0.02, 0.1, 0.5]))
def test_corrections_never_take_more_than_either_exact_form(catalog, pair_margin):
    # many classes against few items: the per-item form is the smaller; few classes, many items: summed per key
    x, classes, cuts = catalog
    clf = PairwiseClassifier(classes, pair_margin=pair_margin)
    merged = PairStats.merge(clf.pair_stats(chunk) for chunk in np.split(x, cuts) if len(chunk))
    check_against_brute_force(merged, x, classes, None, pair_margin)


@pytest.mark.parametrize(("k", "n", "form"), [(3, 400, "summed"), (40, 60, "per item")])
def test_both_forms_of_the_corrections_are_exact(k, n, form, monkeypatch):
    monkeypatch.setattr(classifier, "BLOCK_ROWS", 16)  # many blocks, merged at once
    rng = np.random.default_rng(k)
    classes, x = rng.standard_normal((k, 24)), rng.standard_normal((n, 24))
    stats = PairwiseClassifier(classes, pair_margin=0.1).pair_stats(x)
    assert (stats.correction_keys.size > 0, stats.near_keys.size > 0) == (form == "summed", form == "per item")
    check_against_brute_force(stats, x, classes, None, 0.1)


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


@given(catalogs(max_classes=8, max_dims=6, max_items=80), st.sampled_from([0.0, 0.05, 0.3]),
       st.sampled_from([None, 0.3]), st.sampled_from([None, 3]), st.sampled_from([1, 2, 5, 2048]))
def test_mask_fit_shares_class_spreads_and_equals_the_pairs_own_moments(catalog, pair_margin, score_floor,
                                                                       candidates, chunk):
    # finalize works out each class's spread once and redoes only the corrected sides, a few pairs per step into
    # reused buffers: ratios, counts, fallback and masks are those of each pair's own moments, bit for bit
    x, classes, cuts = catalog
    clf = PairwiseClassifier(classes, pair_margin=pair_margin, score_floor=score_floor, candidates=candidates,
                             min_dims=2, min_items=2)
    for part in np.split(x, cuts):
        if len(part):
            clf.partial_fit(part)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(classifier, "_RATIO_CHUNK", chunk)
        clf.finalize()
        steps = [(chunk, ratios.copy(), counts, fallback) for chunk, (ratios, counts, fallback) in clf._pair_ratios()]
    lo, hi = clf.pairs_[:, 0], clf.pairs_[:, 1]
    n_a, sum_a, sumsq_a = clf.stats_.moments(lo, hi)
    n_b, sum_b, sumsq_b = clf.stats_.moments(hi, lo)
    fallback = np.minimum(n_a, n_b) < clf.min_items
    ratios = moments_ratio(n_a[:, None], sum_a, sumsq_a, n_b[:, None], sum_b, sumsq_b)
    ratios[fallback] = np.nan
    if lo.size:
        np.testing.assert_array_equal(np.concatenate([step[1] for step in steps]), ratios)
        np.testing.assert_array_equal(np.concatenate([step[2] for step in steps]), np.stack([n_a, n_b], axis=1))
    np.testing.assert_array_equal(clf.pair_counts_ab_, np.stack([n_a, n_b], axis=1))
    np.testing.assert_array_equal(clf.pair_fallback_, fallback)
    np.testing.assert_array_equal(clf.pair_masks_, clf._masks(ratios, fallback))
