"""The parent level: a parent's probability is the sum of its children's (pairwise_core/hierarchy.py)."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pairwise_core.hierarchy import Level


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
