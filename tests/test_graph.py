"""The graph refinement's propagation (pairwise_core/graph.py) against a dense reference."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pairwise_core.graph import (
    GraphProjection, Neighbourhood, TopRows, adjacency, edge_weights, inductive, label_votes, normalize, propagate,
    reorder, sharpen, top_classes, top_rows, transition, undirected, with_votes,
)
from pairwise_core.refine import log_softmax


def dense_reference(prior: np.ndarray, neighbours: np.ndarray, weights: np.ndarray, alpha: float,
                    iterations: int) -> np.ndarray:
    """METHOD.md step 10 written out with a dense W = A + A^T, in float64."""
    n = len(prior)
    a = np.zeros((n, n))
    for i in range(n):
        for j, weight in zip(neighbours[i], weights[i], strict=True):
            if j >= 0:
                a[i, j] += weight
    w = a + a.T
    degree = w.sum(axis=1, keepdims=True)
    s = np.divide(w, degree, out=np.zeros_like(w), where=degree > 0)
    f = prior.astype(np.float64)
    for _ in range(iterations):
        f = (1 - alpha) * prior + alpha * s @ f
    total = f.sum(axis=1, keepdims=True)
    return np.divide(f, total, out=np.zeros_like(f), where=total > 0)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = draw(st.integers(2, 12))
    k = draw(st.integers(1, 4))
    n_classes = draw(st.integers(2, 5))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    prior = rng.dirichlet(np.ones(n_classes), size=n).astype(np.float32)
    prior[rng.random(n) < 0.2] = 0  # items rejected in this modality: no prior
    neighbours = rng.integers(-1, n, size=(n, k))  # -1: fewer than k neighbours found
    cos = rng.uniform(-0.3, 1.0, size=(n, k)).astype(np.float32)
    return prior, neighbours, cos


@settings(max_examples=150, deadline=None)
@given(graphs(), st.one_of(st.just(0.0), st.floats(0.01, 0.95)), st.integers(0, 12), st.sampled_from([1.0, 3.0]),
       st.integers(2, 5))
def test_propagation_equals_the_dense_reference_on_any_threads(graph, alpha, iterations, power, threads) -> None:
    prior, neighbours, cos = graph
    weights = edge_weights(cos, power)
    step = transition(adjacency(neighbours, weights, len(prior)))
    got = propagate(prior, step, alpha=alpha, iterations=iterations)
    np.testing.assert_allclose(got, dense_reference(prior, neighbours, weights, alpha, iterations), atol=2e-5)
    # blocks of rows on threads (more threads than rows too): the same bits
    np.testing.assert_array_equal(propagate(prior, step, alpha=alpha, iterations=iterations, threads=threads), got)


@settings(max_examples=100, deadline=None)
@given(graphs(), st.integers(0, 2**32 - 1), st.integers(1, 3))
def test_a_reordered_graph_propagates_the_same_bits(graph, seed, threads) -> None:
    """Rows and columns in another order, each row's entries in theirs: P S P^T (P F) is P (S F) exactly."""
    prior, neighbours, cos = graph
    step = transition(adjacency(neighbours, edge_weights(cos, 1.0), len(prior)))
    order = np.random.default_rng(seed).permutation(len(prior))
    moved = reorder(step, order)
    np.testing.assert_array_equal(moved.toarray(), step.toarray()[order][:, order])
    got = propagate(prior[order], moved, alpha=0.8, iterations=5, threads=threads)
    np.testing.assert_array_equal(got, propagate(prior, step, alpha=0.8, iterations=5)[order])


@settings(max_examples=50, deadline=None)
@given(graphs(), st.floats(0.05, 0.95))
def test_rows_are_distributions_and_rejected_items_get_their_neighbours_classes(graph, alpha) -> None:
    prior, neighbours, cos = graph
    step = transition(adjacency(neighbours, edge_weights(cos, 3.0), len(prior)))
    f = propagate(prior, step, alpha=alpha, iterations=5)
    has_prior = prior.sum(axis=1) > 0
    # an item with no prior but a neighbour with one takes its classes from the graph
    reached = has_prior | (step @ has_prior.astype(np.float32) > 0)
    np.testing.assert_allclose(f.sum(axis=1)[reached], 1, atol=1e-5)
    assert (f >= 0).all()
    further = f.sum(axis=1)[~reached]  # reached over more hops (a distribution), or never (zeros)
    assert np.all((further == 0) | (abs(further - 1) < 1e-5))


def test_no_iterations_or_alpha_zero_gives_the_prior_back() -> None:
    rng = np.random.default_rng(3)
    prior = rng.dirichlet(np.ones(4), size=6).astype(np.float32)
    step = transition(adjacency(rng.integers(0, 6, (6, 3)), np.ones((6, 3), np.float32), 6))
    np.testing.assert_allclose(propagate(prior, step, alpha=0.8, iterations=0), prior, rtol=1e-6)
    np.testing.assert_allclose(propagate(prior, step, alpha=0.0, iterations=7), prior, rtol=1e-6)


def test_a_new_item_takes_one_step_against_the_stored_posteriors() -> None:
    """The inductive step with a graph's own rows is its fixed-point equation: a converged F comes back."""
    rng = np.random.default_rng(7)
    n, k = 40, 5
    prior = rng.dirichlet(np.ones(3), size=n).astype(np.float32)
    neighbours = np.array([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
    weights = edge_weights(rng.uniform(0.2, 1.0, (n, k)), 3.0)
    step = transition(adjacency(neighbours, weights, n))
    stored = propagate(prior, step, alpha=0.8, iterations=200)
    np.testing.assert_allclose(inductive(prior[:10], step[:10], stored, alpha=0.8), stored[:10], atol=1e-5)
    # a new item's own directed row: a weighted mean of its neighbours' F, mixed with its prior
    row = transition(adjacency(neighbours[:1], weights[:1], n), symmetric=False)
    mean = (weights[0] @ stored[neighbours[0]]) / weights[0].sum()
    np.testing.assert_allclose(inductive(prior[:1], row, stored, alpha=0.8)[0], 0.2 * prior[0] + 0.8 * mean,
                               rtol=1e-5)


@settings(max_examples=100, deadline=None)
@given(graphs(), st.integers(0, 2**32 - 1))
def test_the_label_vote_is_each_items_neighbours_weight_per_given_label(graph, seed) -> None:
    """Brute force: for every item and class, the symmetric edge weights to its neighbours given that class."""
    prior, neighbours, cos = graph
    n, n_classes = prior.shape
    given_labels = np.random.default_rng(seed).integers(-1, n_classes, n)  # -1: no given label, no vote
    weights = edge_weights(cos, 1.0)
    w = undirected(adjacency(neighbours, weights, n))
    dense = np.zeros((n, n))
    for i in range(n):
        for j, weight in zip(neighbours[i], weights[i], strict=True):
            if j >= 0:
                dense[i, j] += weight
                dense[j, i] += weight
    expected = np.zeros((n, n_classes))
    for i in range(n):
        for j in range(n):
            if given_labels[j] >= 0:
                expected[i, given_labels[j]] += dense[i, j]
    np.testing.assert_allclose(label_votes(w, given_labels, n_classes).toarray(), expected, atol=1e-6)
    # the same W as the propagation's: its transition is W's rows scaled to sum to one
    np.testing.assert_allclose(transition(w, symmetric=False).toarray(),
                               transition(adjacency(neighbours, weights, n)).toarray(), atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(2, 6), st.floats(0.0, 3.0), st.floats(0.01, 2.0), st.integers(0, 2**32 - 1))
def test_the_vote_joins_the_route_as_a_normalized_product_of_experts(n, n_classes, power, pseudo_count, seed) -> None:
    rng = np.random.default_rng(seed)
    route = log_softmax(rng.normal(0, 3, (n, n_classes)))
    votes = rng.uniform(0, 2, (n, n_classes)) * (rng.random((n, n_classes)) < 0.5)
    votes[0] = 0  # an item whose neighbours have no given label
    got = with_votes(route, votes, power=power, pseudo_count=pseudo_count)
    share = (votes + pseudo_count) / (votes.sum(axis=1, keepdims=True) + n_classes * pseudo_count)
    expected = np.exp(route) * share**power
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.exp(got), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[0], route[0], atol=1e-12)  # a uniform vote leaves the route as it is
    np.testing.assert_allclose(with_votes(route, votes, power=0.0, pseudo_count=pseudo_count), route, atol=1e-12)


def test_edge_weights_clip_negative_and_missing_similarities() -> None:
    got = edge_weights(np.array([[0.5, -0.2, np.nan]]), 3.0)
    np.testing.assert_allclose(got, [[0.125, 0.0, 0.0]])
    assert got.dtype == np.float32


def test_normalize_keeps_an_empty_row_empty() -> None:
    np.testing.assert_array_equal(normalize(np.array([[0.0, 0.0], [1.0, 3.0]], np.float32)), [[0, 0], [0.25, 0.75]])


def test_sharpen_is_a_tempered_softmax_and_keeps_the_label() -> None:
    f = np.random.default_rng(1).dirichlet(np.ones(5), size=30).astype(np.float32)
    f[0] = 0
    got = sharpen(f, 1.5)
    expected = np.exp(1.5 * np.log(f[1:]))
    np.testing.assert_allclose(got[1:], expected / expected.sum(axis=1, keepdims=True), rtol=1e-5)
    np.testing.assert_array_equal(got[1:].argmax(axis=1), f[1:].argmax(axis=1))
    assert (got[0] == 0).all()
    assert (got[1:].max(axis=1) >= f[1:].max(axis=1) - 1e-6).all()


def test_sharpen_by_a_large_power_keeps_every_row_a_distribution() -> None:
    """0.5^200 underflows float32: taken relative to the row's largest entry, the row still sums to one and
    keeps its label (a fitted power reached 152 on the 1M synthetic catalog)."""
    f = np.array([[0.5, 0.3, 0.2], [0.2, 0.45, 0.35], [0.0, 0.0, 0.0]], np.float32)
    got = sharpen(f, 200.0)
    np.testing.assert_allclose(got[:2].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(got[:2].argmax(axis=1), [0, 1])
    np.testing.assert_allclose(got[1], [0.0, 1.0, (0.35 / 0.45) ** 200], atol=1e-30, rtol=1e-4)
    assert (got[2] == 0).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9), st.sampled_from([0.0, 0.5, 1.0, 1.4142, 3.0, 40.0, 152.0]),
       st.integers(0, 2**32 - 1))
def test_sharpen_is_the_renormalised_power_in_float64(n: int, k: int, power: float, seed: int) -> None:
    """Against f^power renormalised, in float64: zero entries and empty rows included, power 0 too."""
    rng = np.random.default_rng(seed)
    f = rng.dirichlet(np.ones(k) * 0.5, size=n).astype(np.float32)
    f[rng.random((n, k)) < 0.2] = 0
    f[rng.random(n) < 0.1] = 0
    got = sharpen(f, power)
    top = f.max(axis=1, keepdims=True).astype(np.float64)
    powered = np.power(np.divide(f, top, out=np.zeros(f.shape), where=top > 0), power)
    powered[(top == 0).ravel()] = 0
    total = powered.sum(axis=1, keepdims=True)
    expected = np.divide(powered, total, out=np.zeros_like(powered), where=total > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    mass = (top > 0).ravel() & (power > 0)  # at power 0 every class is alike
    np.testing.assert_array_equal(got[mass].argmax(axis=1), f[mass].argmax(axis=1))


def test_the_projection_is_the_pca_of_the_concatenated_unit_views() -> None:
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(300, 6)), rng.normal(size=(300, 4)) + 2
    unit = {m: x / np.linalg.norm(x, axis=1, keepdims=True) for m, x in (("a", a), ("b", b))}
    projection = GraphProjection.fit(unit, np.ones((300, 2), bool), dims=3)
    got = projection.project(300, {"a": (a, 1 / np.linalg.norm(a, axis=1), np.ones(300, bool)),
                                   "b": (b, 1 / np.linalg.norm(b, axis=1), np.ones(300, bool))})
    x = np.concatenate([unit["a"], unit["b"]], axis=1) / np.sqrt(2)
    _, _, vt = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    reference = (x - x.mean(axis=0)) @ vt[:3].T
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    sign = np.sign((got * reference).sum(axis=0))  # the same axes, up to sign
    np.testing.assert_allclose(got, reference * sign, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, rtol=1e-5)
    # a row with one view lacks the other's part; a row with none is no point at all
    half = projection.project(2, {"a": (a[:1], 1 / np.linalg.norm(a[:1], axis=1), np.array([True, False])),
                                  "b": (b[:0], np.ones(0), np.array([False, False]))})
    assert np.isclose(np.linalg.norm(half[0]), 1) and not half[1].any()
    restored = GraphProjection.from_arrays(*projection.to_arrays())
    np.testing.assert_array_equal(restored.offset, projection.offset)


def inductive_reference(prior: np.ndarray, neighbours: np.ndarray, weights: np.ndarray, stored: np.ndarray,
                        m: int, alpha: float) -> np.ndarray:
    """METHOD.md step 10.3 written out: each stored row cut to its m largest values and the mass it lost spread
    evenly over its other classes, then per new item (1 - alpha) p_i + alpha sum_j w_ij F_j / sum_j w_ij (the
    prior alone without a neighbour), rows summing to one; in float64, item by item."""
    cut = np.zeros_like(stored, np.float64)
    for j, row in enumerate(stored):
        top = np.argsort(-row, kind="stable")[:m]
        if m < len(row):
            cut[j] = max(0.0, 1 - row[top].sum(dtype=np.float64)) / (len(row) - m)
        cut[j, top] = row[top]
    out = np.zeros_like(prior, np.float64)
    for i in range(len(prior)):
        keep = [(j, w) for j, w in zip(neighbours[i], weights[i], strict=True) if j >= 0 and w > 0]
        total = sum(w for _, w in keep)
        mean = sum(w * cut[j] for j, w in keep) / total if keep else np.zeros(prior.shape[1])
        f = (1 - alpha) * prior[i] + alpha * mean
        out[i] = f / f.sum() if f.sum() > 0 else f
    return out


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), n_stored=st.integers(1, 30), n_classes=st.integers(1, 9), k=st.integers(1, 6),
       m=st.integers(1, 9), alpha=st.just(0.0) | st.floats(1e-3, 1.0), empty=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_the_inductive_step_with_top_classes_equals_the_dense_reference(n, n_stored, n_classes, k, m, alpha,
                                                                         empty, seed) -> None:
    rng = np.random.default_rng(seed)
    prior = rng.dirichlet(np.ones(n_classes), size=n).astype(np.float32)
    if empty:
        prior[0] = 0  # an item its modality rejected: its neighbours' classes alone
    stored = rng.dirichlet(np.ones(n_classes), size=n_stored).astype(np.float32)
    neighbours = rng.integers(-1, n_stored, (n, k))  # -1: fewer neighbours found
    weights = edge_weights(rng.uniform(-0.3, 1.0, (n, k)), 2.0)  # some clipped to zero
    step = transition(adjacency(neighbours, weights, n_stored), symmetric=False)
    got = inductive(prior, step, TopRows(*top_classes(stored, m), n_classes), alpha=alpha)
    np.testing.assert_allclose(got, inductive_reference(prior, neighbours, weights, stored, m, alpha), atol=1e-5)


def test_top_classes_keep_the_largest_values_in_the_smallest_type() -> None:
    f = np.array([[0.1, 0.5, 0.0, 0.4], [0.7, 0.1, 0.2, 0.0]], np.float32)
    values, classes = top_classes(f, 2)
    assert classes.dtype == np.uint8 and classes.tolist() == [[1, 3], [0, 2]]
    np.testing.assert_array_equal(values, np.array([[0.5, 0.4], [0.7, 0.2]], np.float32))
    np.testing.assert_array_equal(top_rows(*top_classes(f, 9), 4).toarray(), f)  # m >= K: F as it was
    for m in (4, 9):  # every class kept: each row's classes in order, in the same type
        values, classes = top_classes(f, m)
        assert classes.dtype == np.uint8 and classes.tolist() == [[0, 1, 2, 3]] * 2
        np.testing.assert_array_equal(values, f)


def test_a_neighbourhood_round_trips_as_plain_arrays() -> None:
    values, classes = top_classes(np.eye(3, dtype=np.float32), 2)
    hood = Neighbourhood(np.arange(7, dtype=np.uint8), np.array([5, 9, 2], np.uint64), {"0": values, "joint": values},
                         {"0": classes, "joint": classes}, {"0": np.ones(5), "joint": np.full(5, 2.0)},
                         {"k": 4, "alpha": 0.8, "power": 1.0, "seed": 0, "n_classes": 3})
    arrays, state = hood.to_arrays()
    assert not any(a.dtype.hasobject for a in arrays.values())
    back = Neighbourhood.from_arrays(arrays, state)
    assert back.settings == hood.settings and list(back.values) == ["0", "joint"]
    np.testing.assert_array_equal(back.stored("joint").dense(), np.eye(3))
    np.testing.assert_array_equal(back.index, hood.index)  # a model stored before kept the index here, as bytes
    hood.index = None  # now it is a file of its own, beside the arrays
    arrays, state = hood.to_arrays()
    assert "index" not in arrays and Neighbourhood.from_arrays(arrays, state).index is None
