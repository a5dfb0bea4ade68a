import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core import NotFittedError, PairwiseClassifier, cross_ratio
from pairwise_core import make_catalog
from pairwise_core.catalog import embeddings
from reference import match_margin, noisy_catalog, play_bracket, unit_rows, wins


def reference_tourney(x, clf, classes):
    """(labels, margins) item by item."""
    unit, masks = unit_rows(classes), clf.masks_
    played = [play_bracket(row, list(clf.bracket_), unit, lambda a, b: masks[a, b], clf.bracket_slots_) for row in x]
    return np.array([label for label, _ in played]), np.array([margin for _, margin in played])


def reference_round_robin(x, clf, classes):
    """(labels, margins): most wins, then base score, then the lower class; the margin of the winner's
    win over the strongest opponent it beat, by the same order."""
    k = classes.shape[0]
    unit, masks = unit_rows(classes), clf.masks_
    labels, margins = [], []
    for row in x:
        won = np.zeros(k)
        beat = np.zeros((k, k), dtype=bool)
        for a in range(k):
            for b in range(a + 1, k):
                winner, loser = (a, b) if wins(row, a, b, unit, masks[a, b]) else (b, a)
                won[winner] += 1
                beat[winner, loser] = True
        base = unit @ (row / np.linalg.norm(row))
        strength = lambda c: (won[c], base[c], -c)  # noqa: E731
        label = max(range(k), key=strength)
        labels.append(label)
        if k == 1:
            margins.append(np.nan)
            continue
        beaten = max(np.flatnonzero(beat[label]), key=strength)
        margins.append(match_margin(row, label, beaten, unit, masks[label, beaten]))
    return np.array(labels), np.array(margins)


@st.composite
def problems(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k, d, n = draw(st.integers(1, 7)), draw(st.integers(1, 12)), draw(st.integers(1, 40))
    x, classes = noisy_catalog(rng, k, d, n)
    params = dict(
        cutoff=draw(st.sampled_from([1.0, 1.05, 1.3])),
        min_dims=draw(st.integers(1, 4)),
        min_items=draw(st.integers(2, 4)),
        seed=draw(st.integers(0, 1000)),
    )
    return x, classes, params


@given(problems())
def test_vectorized_tourney_equals_per_item_reference(problem):
    x, classes, params = problem
    clf = PairwiseClassifier(classes, strategy="tourney", **params).fit(x)
    labels, margins = clf.predict(x, return_margin=True)
    expected_labels, expected_margins = reference_tourney(x, clf, classes)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(margins, expected_margins, rtol=1e-9, atol=1e-12)


@given(problems())
def test_vectorized_round_robin_equals_per_item_reference(problem):
    x, classes, params = problem
    clf = PairwiseClassifier(classes, strategy="round_robin", **params).fit(x)
    labels, margins = clf.predict(x, return_margin=True)
    expected_labels, expected_margins = reference_round_robin(x, clf, classes)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(margins, expected_margins, rtol=1e-9, atol=1e-12)
    assert not (margins < 0).any()  # the deciding match is one the winner won


def slot_bias(n_classes: int, seeds: range) -> np.ndarray:
    """Per bracket slot, the mean over seeds of (share of items the tourney gives the class seeded
    there) minus (the share the round robin, which has no slots, gives it): noisy data, so matches
    are close and a position that plays fewer of them shows."""
    items, classes = make_catalog(6000, n_classes, seed=0, signal_strength=0.06)
    x, c = embeddings(items, "image_embedding"), embeddings(classes, "image_embedding")
    bias = []
    for seed in seeds:
        tourney = PairwiseClassifier(c, seed=seed).fit(x)
        round_robin = PairwiseClassifier(c, seed=seed, strategy="round_robin").fit(x)
        shares = [np.bincount(m.predict(x), minlength=n_classes) / len(x) for m in (tourney, round_robin)]
        bias.append((shares[0] - shares[1])[tourney.bracket_])
    return np.mean(bias, axis=0)


@pytest.mark.parametrize("n_classes", [9, 13])
def test_no_bracket_slot_is_favoured(n_classes):
    # byes carried to the end of each round once gave the last slot +9.7 points at K = 9 and +2.9 at
    # K = 13 here; byes drawn by the seed in round 1 leave every slot within 0.8 points
    assert np.abs(slot_bias(n_classes, range(8))).max() < 0.015


def test_byes_fall_in_round_one_one_per_match_at_seeded_slots():
    for k in (3, 5, 9, 13, 16):
        layouts = {tuple(PairwiseClassifier(np.eye(k), seed=s).finalize().bracket_slots_) for s in range(6)}
        size = 1 << (k - 1).bit_length()
        for slots in map(np.array, layouts):
            assert slots.size == size and sorted(slots[slots >= 0]) == list(range(k))
            assert (slots[0::2] >= 0).all()  # at most one bye per round-1 match
        assert len(layouts) > 1 or size == k


@given(problems())
def test_masks_follow_ratios_and_are_symmetric(problem):
    x, classes, params = problem
    clf = PairwiseClassifier(classes, **params).fit(x)
    k, d = classes.shape
    assert clf.masks_.shape == (k, k, d)
    np.testing.assert_array_equal(clf.masks_, clf.masks_.transpose(1, 0, 2))
    assert not clf.masks_[np.arange(k), np.arange(k)].any()
    for a in range(k):
        for b in range(a + 1, k):
            n_dims = clf.masks_[a, b].sum()
            if clf.fallback_[a, b]:
                assert n_dims == d
                continue
            ratio = clf.ratios_[a, b]
            passing = (ratio > params["cutoff"]).sum()
            assert n_dims == max(passing, min(params["min_dims"], d))
            # kept dimensions are the top ones by ratio
            assert ratio[clf.masks_[a, b]].min() >= ratio[~clf.masks_[a, b]].max(initial=-np.inf)


def test_ratios_match_cross_ratio_of_confident_sets():
    rng = np.random.default_rng(0)
    classes = rng.standard_normal((3, 8))
    x = classes[rng.integers(0, 3, 300)] + 0.8 * rng.standard_normal((300, 8))
    clf = PairwiseClassifier(classes, pair_margin=0.05).fit(x)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    scores = unit @ (classes / np.linalg.norm(classes, axis=1, keepdims=True)).T
    base = scores.argmax(1)
    set_a = unit[(base == 0) & (np.abs(scores[:, 0] - scores[:, 1]) >= 0.05)]
    set_b = unit[(base == 1) & (np.abs(scores[:, 1] - scores[:, 0]) >= 0.05)]
    np.testing.assert_allclose(clf.ratios_[0, 1], cross_ratio(set_a, set_b), rtol=1e-6)  # stored as float32
    assert clf.pair_counts_[0, 1] == len(set_a) and clf.pair_counts_[1, 0] == len(set_b)


def test_same_seed_same_labels_and_seed_changes_bracket():
    rng = np.random.default_rng(1)
    classes = rng.standard_normal((9, 16))
    x = classes[rng.integers(0, 9, 500)] + 1.5 * rng.standard_normal((500, 16))
    first = PairwiseClassifier(classes, seed=7).fit(x)
    again = PairwiseClassifier(classes, seed=7).fit(x)
    np.testing.assert_array_equal(first.predict(x), again.predict(x))
    np.testing.assert_array_equal(first.bracket_, again.bracket_)
    brackets = {tuple(PairwiseClassifier(classes, seed=s).fit(x).bracket_) for s in range(5)}
    assert len(brackets) > 1


def test_margin_is_the_deciding_match_confidence():
    rng = np.random.default_rng(2)
    classes = rng.standard_normal((2, 10))
    x = classes[rng.integers(0, 2, 50)] + rng.standard_normal((50, 10))
    clf = PairwiseClassifier(classes, min_dims=4).fit(x)
    labels, margin = clf.predict(x, return_margin=True)
    unit = classes / np.linalg.norm(classes, axis=1, keepdims=True)
    m = clf.masks_[0, 1]
    w = unit[0] * m / np.linalg.norm(unit[0] * m) - unit[1] * m / np.linalg.norm(unit[1] * m)
    expected = np.abs(x @ w) / np.linalg.norm(x * m, axis=1)
    np.testing.assert_allclose(margin, expected, rtol=1e-10)
    assert (margin >= 0).all()


# -- degenerate cases ------------------------------------------------------


def test_one_class():
    classes = np.array([[1.0, 2.0, 3.0]])
    x = np.random.default_rng(0).standard_normal((20, 3))
    for strategy in ("tourney", "round_robin"):
        clf = PairwiseClassifier(classes, strategy=strategy).fit(x)
        labels, margin = clf.predict(x, return_margin=True)
        assert (labels == 0).all() and np.isnan(margin).all()
        assert clf.masks_.shape == (1, 1, 3) and not clf.masks_.any()


def test_two_classes_is_one_match():
    classes = np.array([[1.0, 0.0, 0.0, 0.2], [0.0, 1.0, 0.0, 0.2]])
    # dimension 2 is a nuisance: +-5 in both classes alike
    x = np.array([[0.9, 0.1, 5.0, 0.0], [0.9, 0.1, -5.0, 0.0], [0.1, 0.9, 5.0, 0.0], [0.1, 0.9, -5.0, 0.0]] * 5)
    clf = PairwiseClassifier(classes, min_dims=1, min_items=2).fit(x)
    np.testing.assert_array_equal(clf.predict(x), [0, 0, 1, 1] * 5)
    np.testing.assert_array_equal(clf.masks_[0, 1], [True, True, False, False])
    assert clf.ratios_[0, 1, 2] == pytest.approx(1.0)


def test_class_with_no_confident_items_falls_back_to_all_dimensions():
    rng = np.random.default_rng(4)
    classes = np.eye(4, 12)
    x = classes[rng.integers(0, 3, 200)] + 0.1 * rng.standard_normal((200, 12))  # nobody near class 3
    clf = PairwiseClassifier(classes).fit(x)
    assert (clf.pair_counts_[3] == 0).all()
    assert clf.fallback_[3, :3].all() and clf.fallback_[:3, 3].all()
    assert clf.masks_[3, 0].all() and clf.masks_[0, 3].all()
    assert clf.predict(x).shape == (200,)


def test_no_dimension_above_cutoff_keeps_the_top_min_dims():
    rng = np.random.default_rng(5)
    classes = rng.standard_normal((3, 10))
    x = classes[rng.integers(0, 3, 300)] + rng.standard_normal((300, 10))
    clf = PairwiseClassifier(classes, cutoff=1e6, min_dims=3).fit(x)
    kept = clf.masks_.sum(-1)[~np.eye(3, dtype=bool)]
    assert (kept == 3).all()


def test_max_dims_caps_the_mask():
    rng = np.random.default_rng(5)
    classes = rng.standard_normal((3, 10))
    x = classes[rng.integers(0, 3, 300)] + rng.standard_normal((300, 10))
    clf = PairwiseClassifier(classes, cutoff=1.0, min_dims=1, max_dims=2).fit(x)
    assert (clf.masks_.sum(-1)[~np.eye(3, dtype=bool)] == 2).all()


def test_zero_variance_dimensions_do_not_break_fitting():
    rng = np.random.default_rng(6)
    classes = rng.standard_normal((3, 8))
    x = classes[rng.integers(0, 3, 200)] + rng.standard_normal((200, 8))
    x[:, 6:] = 0.0  # two dimensions with zero variance in every set
    clf = PairwiseClassifier(classes, min_dims=1).fit(x)
    assert np.isfinite(clf.predict(x, return_margin=True)[1]).all()
    off_diagonal = ~np.eye(3, dtype=bool)
    assert (clf.ratios_[off_diagonal][:, 6:] == 1.0).all()
    assert not clf.masks_[off_diagonal][:, 6:].any()


def test_one_dimension():
    classes = np.array([[1.0], [-1.0]])
    x = np.array([[0.5], [-2.0], [3.0], [-1.0]])
    for strategy in ("tourney", "round_robin"):
        clf = PairwiseClassifier(classes, strategy=strategy, min_items=2).fit(x)
        assert not clf.fallback_.any()
        np.testing.assert_array_equal(clf.predict(x), [0, 1, 0, 1])
        np.testing.assert_array_equal(clf.predict_base(x), [0, 1, 0, 1])


def test_float32_input_gives_float32_scores_and_same_labels():
    rng = np.random.default_rng(8)
    classes = rng.standard_normal((5, 32))
    x = classes[rng.integers(0, 5, 400)] + rng.standard_normal((400, 32))
    clf = PairwiseClassifier(classes).fit(x)
    result32 = clf.classify(x.astype(np.float32))
    labels64, margins64 = clf.predict(x, return_margin=True)
    assert result32.margin.dtype == np.float32
    np.testing.assert_allclose(result32.margin, margins64, atol=1e-5)
    # float32 may only flip a final that float64 calls within its own rounding; here there is none
    clear = margins64 > 1e-4
    assert clear.all()
    np.testing.assert_array_equal(result32.label, labels64)


def test_square_norms_the_caller_has_give_the_same_result_and_are_still_checked():
    rng = np.random.default_rng(9)
    classes = rng.standard_normal((6, 24))
    x = (classes[rng.integers(0, 6, 9000)] + rng.standard_normal((9000, 24))).astype(np.float32)  # 3 blocks
    clf = PairwiseClassifier(classes).fit(x)
    given = rng.integers(0, 6, len(x))
    own = clf.classify(x, given=given)
    passed = clf.classify(x, given=given, square_norms=np.einsum("ij,ij->i", x, x))
    for field in ("base_label", "base_score", "base_margin", "label", "margin", "given_gap", "given_h2h"):
        np.testing.assert_array_equal(getattr(passed, field), getattr(own, field))
    zero = x.copy()
    zero[5000] = 0
    with pytest.raises(ValueError, match="all-zero vectors in rows 5000"):
        clf.classify(zero, square_norms=np.einsum("ij,ij->i", zero, zero))
    with pytest.raises(ValueError, match="square_norms must be of shape"):
        clf.classify(x, square_norms=np.ones(len(x) - 1, np.float32))


# -- invalid input -----------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.array([[1.0, np.nan, 0.0]]), "NaN or Inf in rows 0"),
        (np.array([[1.0, 1.0, 1.0], [1.0, np.inf, 0.0]]), "NaN or Inf in rows 1"),
        (np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]]), "all-zero vectors in rows 1"),
        (np.array([[1.0, 1.0, 1.0], [3e38, 1.0, 0.0]], np.float32), r"too large for float32 \(the square norm "
                                                                    r"overflows\) in rows 1"),
        (np.array([[1e-30, 0.0, 0.0]], np.float32), r"too small for float32 \(the square norm underflows\) in rows 0"),
        (np.ones((2, 4)), "4 dimensions, expected 3"),
        (np.ones((0, 3)), "empty"),
        (np.ones(3), "must be 2-D"),
        (np.array([["a", "b", "c"]]), "must hold numbers"),
    ],
)
def test_invalid_items_raise_a_clear_error(x, message):
    clf = PairwiseClassifier(np.eye(3))
    with pytest.raises(ValueError, match=message):
        clf.fit(x)


def test_invalid_classes_raise_a_clear_error():
    with pytest.raises(ValueError, match="class_embeddings has all-zero vectors in rows 1"):
        PairwiseClassifier(np.array([[1.0, 0.0], [0.0, 0.0]])).fit(np.ones((2, 2)))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"strategy": "knockout"}, "strategy must be one of"),
        ({"cutoff": -1}, r"cutoff must be in \[0, inf\]"),
        ({"min_dims": 0}, "min_dims must be in"),
        ({"min_dims": 2.5}, "min_dims must be an integer"),
        ({"min_items": 1}, r"min_items must be in \[2, inf\]"),
        ({"max_dims": 2, "min_dims": 4}, "max_dims .2. must be >= min_dims"),
        ({"score_floor": 2.0}, "score_floor must be in"),
        ({"seed": -1}, "seed must be in"),
    ],
)
def test_invalid_parameters_raise_when_fitting(params, message):
    clf = PairwiseClassifier(np.eye(3), **params)  # __init__ only stores
    with pytest.raises(ValueError, match=message):
        clf.fit(np.eye(3))


def test_predict_before_fit_says_so():
    with pytest.raises(NotFittedError, match="not fitted"):
        PairwiseClassifier(np.eye(3)).predict(np.eye(3))


def test_a_pruned_model_where_no_pair_met_plays_on_the_full_embedding():
    # finalized with no items: no pair met, so every match is the plain cosine comparison
    rng = np.random.default_rng(9)
    classes, x = rng.standard_normal((6, 8)), rng.standard_normal((50, 8))
    clf = PairwiseClassifier(classes, candidates=3).finalize()
    assert clf.pairs_.shape == (0, 2)
    labels, margins = clf.predict(x, return_margin=True)
    cosines = unit_rows(x) @ unit_rows(classes).T
    # on the full embedding, each match goes to the higher cosine: the tourney of top-3 ends at the best
    np.testing.assert_array_equal(labels, cosines.argmax(axis=1))
    assert (margins >= 0).all()


def test_round_robin_margins_hold_in_cycles():
    # noisy data makes cycles (the winner lost to the runner-up), where the margin of that match would be
    # negative; the margin is of the winner's win over the strongest opponent it beat instead
    items, classes = make_catalog(1500, 9, seed=4, signal_strength=0.06)
    x, c = embeddings(items, "image_embedding").astype(np.float64), embeddings(classes, "image_embedding")
    clf = PairwiseClassifier(c, strategy="round_robin", seed=1).fit(x)
    labels, margins = clf.predict(x, return_margin=True)
    expected_labels, expected_margins = reference_round_robin(x, clf, c.astype(np.float64))
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(margins, expected_margins, rtol=1e-9, atol=1e-12)
    assert margins.min() >= 0
    # the case is there: some winner lost to the next strongest candidate
    unit, masks = unit_rows(c.astype(np.float64)), clf.masks_
    base = unit_rows(x) @ unit.T
    wins_of = np.zeros((len(x), 9))
    for a in range(9):
        for b in range(a + 1, 9):
            first = np.array([wins(row, a, b, unit, masks[a, b]) for row in x])
            wins_of[:, a] += first
            wins_of[:, b] += ~first
    strength = wins_of + (base + 1) / 4
    strength[np.arange(len(x)), labels] = -np.inf
    runner_up = strength.argmax(axis=1)
    lost = [not wins(row, a, b, unit, masks[a, b]) for row, a, b in zip(x, labels, runner_up, strict=True)]
    assert sum(lost) > 10
