"""Candidate pruning: only an item's top-m classes play, and only pairs that meet get masks."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core import PairwiseClassifier, accuracy, embeddings, make_catalog
from pairwise_core.classifier import _top_columns
from reference import match_margin, noisy_catalog, play_bracket, unit_rows, wins


def candidate_scores(x, clf):
    """Cosine of each item with each class on that class's class-vs-rest dimensions."""
    num = x @ clf._candidate_columns.T.astype(x.dtype)
    return num / np.sqrt((x * x) @ clf._candidate_masks.T.astype(x.dtype))


def pruned_mask_of(clf, classes):
    masks, met = clf.masks_, {(a, b) for a, b in clf.pairs_}

    def mask_of(a, b):  # a pair that never met is played on the full embedding
        return masks[a, b] if (min(a, b), max(a, b)) in met else np.ones(classes.shape[1])

    return mask_of


def brackets(x, clf, m):
    """Per item: its top-m classes by candidate score, in bracket order."""
    rank = {c: r for r, c in enumerate(clf.bracket_)}
    for scores in candidate_scores(x, clf):
        yield sorted(np.argsort(-scores, kind="stable")[:m], key=lambda c: rank[c])


def reference_pruned_tourney(x, clf, classes, m):
    """(labels, margins): the plain bracket of METHOD.md over each item's candidates."""
    unit, mask_of = unit_rows(classes), pruned_mask_of(clf, classes)
    played = [play_bracket(row, top, unit, mask_of, clf.bracket_slots_) for row, top in zip(x, brackets(x, clf, m))]
    return np.array([label for label, _ in played]), np.array([margin for _, margin in played])


def reference_pruned_round_robin(x, clf, classes, m):
    """(labels, margins): every pair of an item's candidates plays; most wins, then base cosine; the
    margin of the winner's win over the strongest opponent it beat."""
    unit, mask_of = unit_rows(classes), pruned_mask_of(clf, classes)
    labels, margins = [], []
    for row, top in zip(x, brackets(x, clf, m)):
        base = unit @ (row / np.linalg.norm(row))
        won, beat = {c: 0 for c in top}, {c: set() for c in top}
        for s, a in enumerate(top):
            for b in top[s + 1 :]:
                winner, loser = (a, b) if wins(row, a, b, unit, mask_of(a, b)) else (b, a)
                won[winner] += 1
                beat[winner].add(loser)
        order = {c: (won[c], base[c], -s) for s, c in enumerate(top)}
        label = max(top, key=order.get)
        beaten = max(beat[label], key=order.get)
        labels.append(label)
        margins.append(match_margin(row, label, beaten, unit, mask_of(label, beaten)))
    return np.array(labels), np.array(margins)


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, d, n = draw(st.integers(3, 9)), draw(st.integers(2, 10)), draw(st.integers(1, 40))
    x, classes = noisy_catalog(rng, k, d, n)
    return x, classes, draw(st.integers(2, k - 1)), draw(st.integers(0, 100))


@given(problems())
def test_pruned_tourney_equals_per_item_reference(problem):
    x, classes, m, seed = problem
    clf = PairwiseClassifier(classes, candidates=m, min_dims=2, min_items=2, seed=seed).fit(x)
    labels, margins = clf.predict(x, return_margin=True)
    expected_labels, expected_margins = reference_pruned_tourney(x, clf, classes, m)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(margins, expected_margins, rtol=1e-5, atol=1e-6)  # pruned weights are float32
    # masks are fitted for the pairs among each item's top 2m classes by base cosine (pass 1's net)
    cos = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ unit_rows(classes).T
    top = np.argsort(-cos, axis=1)[:, : 2 * m]
    expected = {(min(a, b), max(a, b)) for row in top for a in row for b in row if a != b}
    assert {tuple(p) for p in clf.pairs_} == expected


def test_candidates_covering_every_class_is_no_pruning():
    rng = np.random.default_rng(0)
    classes = rng.standard_normal((6, 12))
    x = classes[rng.integers(0, 6, 300)] + rng.standard_normal((300, 12))
    full = PairwiseClassifier(classes).fit(x)
    same = PairwiseClassifier(classes, candidates=6).fit(x)
    np.testing.assert_array_equal(same.masks_, full.masks_)
    np.testing.assert_array_equal(same.predict(x), full.predict(x))


def test_pruned_statistics_stream_and_merge():
    rng = np.random.default_rng(1)
    classes = rng.standard_normal((12, 16))
    x = classes[rng.integers(0, 12, 900)] + rng.standard_normal((900, 16))
    whole = PairwiseClassifier(classes, candidates=4, pair_margin=0.02).fit(x)
    streamed = PairwiseClassifier(classes, candidates=4, pair_margin=0.02)
    for chunk in np.array_split(x, 5):
        streamed.partial_fit(chunk)
    streamed.finalize()
    np.testing.assert_array_equal(streamed.pairs_, whole.pairs_)
    np.testing.assert_array_equal(streamed.pair_masks_, whole.pair_masks_)
    np.testing.assert_array_equal(streamed.predict(x), whole.predict(x))
    # the K^2 part is the pair margin's corrections: never more bytes than the smaller of their two
    # exact forms, every (a, b) key summed, or every item that has one held once
    cos = unit_rows(x) @ unit_rows(classes).T
    a = cos.argmax(axis=1)
    close = cos[np.arange(len(x)), a][:, None] - cos < 0.02
    close[np.arange(len(x)), a] = False
    item, b = np.nonzero(close)
    bound = min(np.unique(a[item] * 12 + b).size * (2 * 16 * 8 + 16), np.unique(item).size * 16 * 8 + item.size * 16)
    for stats in (whole.stats_, streamed.stats_):
        held = [stats.correction_keys, stats.correction_count, stats.correction_sum, stats.correction_sumsq,
                stats.near_items, stats.near_keys, stats.near_rows]
        assert 0 < sum(array.nbytes for array in held) <= bound


@given(problems())
def test_pruned_round_robin_equals_per_item_reference(problem):
    x, classes, m, seed = problem
    clf = PairwiseClassifier(classes, candidates=m, min_dims=2, strategy="round_robin", seed=seed).fit(x)
    labels, margins = clf.predict(x, return_margin=True)
    expected_labels, expected_margins = reference_pruned_round_robin(x, clf, classes, m)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(margins, expected_margins, rtol=1e-5, atol=1e-6)
    assert (margins >= 0).all()


def test_pruning_keeps_accuracy_on_a_synthetic_catalog():
    items, classes = make_catalog(6000, 60, seed=3, signal_strength=0.15)
    names = classes.column("class_name").to_pylist()
    gold = np.array([names.index(v) for v in items.column("label").to_pylist()])
    x, c = embeddings(items, "image_embedding"), embeddings(classes, "image_embedding")
    full = accuracy(gold, PairwiseClassifier(c).fit(x).predict(x))
    pruned = accuracy(gold, PairwiseClassifier(c, candidates=8).fit(x).predict(x))
    base = accuracy(gold, PairwiseClassifier(c).predict_base(x))
    assert pruned >= full - 0.01 and pruned > base + 0.1


def test_a_model_from_its_arrays_leaves_out_what_it_derives_and_predicts_the_same():
    items, classes = make_catalog(2_000, 12, seed=3)
    x, c = embeddings(items, "image_embedding"), embeddings(classes, "image_embedding")
    for candidates in (None, 4):
        clf = PairwiseClassifier(c, candidates=candidates).fit(x)
        arrays, _ = clf.to_arrays()
        assert not {"weights", "index", "candidate_columns", "candidate_masks", "mask_dims"} & set(arrays)
        loaded = PairwiseClassifier.from_arrays(*clf.to_arrays())
        before, after = clf.classify(x), loaded.classify(x)
        for field in ("label", "margin", "base_label", "base_score"):
            np.testing.assert_array_equal(getattr(after, field), getattr(before, field))


def test_the_labelling_copy_labels_the_same_without_the_corrections():
    import pytest

    items, classes = make_catalog(2_000, 12, seed=5)
    x, c = embeddings(items, "image_embedding"), embeddings(classes, "image_embedding")
    clf = PairwiseClassifier(c, candidates=4, pair_margin=0.05).fit(x)
    copy = PairwiseClassifier.from_arrays(*clf.to_arrays())
    assert clf.stats_.correction_keys.size + clf.stats_.near_keys.size > 0
    assert copy.stats_.correction_keys.size + copy.stats_.near_keys.size + copy.stats_.near_items.size == 0
    before, after = clf.classify(x), copy.classify(x)
    for field in ("label", "margin", "base_label"):
        np.testing.assert_array_equal(getattr(after, field), getattr(before, field))
    with pytest.raises(ValueError, match="for labelling"):
        copy.pair_ratios_


@given(st.integers(1, 40), st.integers(2, 30), st.integers(0, 2**32 - 1))
def test_top_columns_are_the_stable_top_m_in_column_order(n, k, seed):
    """Ties at the m-th score (few distinct scores, -inf for unscored) go to the first columns."""
    rng = np.random.default_rng(seed)
    m = int(rng.integers(1, k + 1))
    scores = rng.integers(-3, 4, size=(n, k)).astype(np.float32)
    scores[scores == -3] = -np.inf
    expected = np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :m], axis=1)
    np.testing.assert_array_equal(_top_columns(scores, m), expected)
