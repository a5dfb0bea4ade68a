"""PairWeights and DenseWeights: each pair's match weights, sparse or as rows, against the definition."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest

from pairwise_core.pair_weights import DENSE_ABOVE, DenseWeights, PairWeights, pair_weights


def dense_weights(unit, pairs, masks):
    """w_p = u_lo*m / |u_lo*m| - u_hi*m / |u_hi*m| per pair (a zero row stays zero), METHOD.md step 5."""
    def side(rows):
        kept = unit[rows] * masks
        norm = np.linalg.norm(kept, axis=1, keepdims=True)
        return kept / np.where(norm == 0, 1, norm)
    return side(pairs[:, 0]) - side(pairs[:, 1])


@pytest.mark.parametrize("form", [PairWeights, DenseWeights])
@settings(max_examples=60, deadline=None)
@given(st.integers(2, 7), st.integers(1, 12), st.integers(1, 30), st.integers(0, 2**32 - 1))
def test_dots_and_masked_norms_equal_the_definition(form, k, d, n, seed):
    rng = np.random.default_rng(seed)
    unit = rng.normal(size=(k, d))
    unit[rng.random(k) < 0.2] = 0.0  # zero classes normalize to zero
    unit /= np.where((norm := np.linalg.norm(unit, axis=1, keepdims=True)) == 0, 1, norm)
    lo, hi = np.triu_indices(k, k=1)
    pairs = np.stack([lo, hi], axis=1)
    masks = rng.random((len(pairs), d)) < rng.uniform(0, 1)  # some rows empty
    weights = form.of(unit, pairs, masks)
    x = rng.normal(size=(n, d)).astype(np.float32)
    rows, which = rng.integers(0, n, 50), rng.integers(0, len(pairs), 50)
    dense = dense_weights(unit, pairs, masks)
    np.testing.assert_allclose(weights.dots(x, rows, which), np.einsum("ij,ij->i", x[rows], dense[which]),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights.masked_sq_norms(x, rows, which),
                               np.einsum("ij,ij->i", x[rows] * masks[which], x[rows] * masks[which]),
                               rtol=1e-5, atol=1e-5)
    assert weights.n_pairs == len(pairs)
    if form is DenseWeights:
        return
    for p in range(len(pairs)):  # each pair's own dims in its row, padded by less than half
        dims, values = weights.dims[weights.table[p]][weights.slot[p]], weights.values[weights.table[p]][weights.slot[p]]
        width = masks[p].sum()
        np.testing.assert_array_equal(dims[:width], np.flatnonzero(masks[p]))
        assert (values[width:] == 0).all() and (width == 0 or dims.size <= np.ceil(1.5 * width))



@settings(max_examples=30, deadline=None)
@given(st.integers(2, 30), st.integers(1, 40), st.integers(0, 2**32 - 1))
def test_sums_run_term_by_term(k, d, seed):
    """Scores and masked norms are float32 terms summed in float64 in dims order: the same bits as the
    running sum labels were made with before (a pairwise or BLAS order would move some in the last bits)."""
    rng = np.random.default_rng(seed)
    unit = rng.normal(size=(k, d))
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    lo, hi = np.triu_indices(k, k=1)
    pairs = np.stack([lo, hi], axis=1)
    masks = rng.random((len(pairs), d)) < rng.uniform(0.05, 1, size=(len(pairs), 1))
    weights = PairWeights.of(unit, pairs, masks)
    x = rng.normal(size=(7, d)).astype(np.float32)
    rows, which = rng.integers(0, 7, 200), rng.integers(0, len(pairs), 200)
    dots, norms = weights.dots(x, rows, which), weights.masked_sq_norms(x, rows, which)
    for i, (r, p) in enumerate(zip(rows, which)):
        width = masks[p].sum()
        picked = x[r, np.flatnonzero(masks[p])]
        values = weights.values[weights.table[p]][weights.slot[p], :width]
        dot = norm = 0.0
        for term, square in zip(picked * values, picked * picked):
            dot, norm = dot + float(term), norm + float(square)
        assert dots[i] == dot and norms[i] == norm


def test_the_form_follows_the_masks_density():
    unit = np.eye(4)
    pairs = np.array([[0, 1], [2, 3]])
    sparse = np.zeros((2, 4), bool)
    sparse[:, 0] = True  # 25% kept: not above DENSE_ABOVE
    assert DENSE_ABOVE == 0.25
    weights = pair_weights(unit, pairs, sparse)
    assert isinstance(weights, PairWeights) and sum(t.size for t in weights.dims) == 2  # only the kept dims
    assert isinstance(pair_weights(unit, pairs, np.ones((2, 4), bool)), DenseWeights)
