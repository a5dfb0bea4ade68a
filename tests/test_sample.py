"""The run's seeded item hash: the refinement's sample and the folds drawn from it, whatever the batches."""

import numpy as np
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from tasks.sample import N_FOLDS, folds_of, hash_unit, item_folds, item_hash


def test_the_share_keeps_its_rate_and_depends_on_the_seed():
    ids = pa.array([f"item-{i}" for i in range(50_000)])
    sampled = hash_unit(item_hash(ids, 3)) < 0.1
    assert abs(sampled.mean() - 0.1) < 0.01
    assert not np.array_equal(hash_unit(item_hash(ids, 4)) < 0.1, sampled)
    # independent of the folds, which read the same hash
    folds = folds_of(item_hash(ids, 3))
    shares = np.bincount(folds[sampled], minlength=N_FOLDS) / sampled.sum()
    assert np.abs(shares - 1 / N_FOLDS).max() < 0.02


@given(st.lists(st.text(max_size=12), min_size=1, max_size=60, unique=True), st.integers(0, 2**32), st.data())
def test_an_item_hashes_alike_in_any_batch(ids, seed, data):
    """The hash of an id does not depend on its neighbours in the batch, nor on the batch's offset."""
    whole = item_hash(pa.array(ids), seed)
    start = data.draw(st.integers(0, len(ids) - 1))
    sliced = pa.array(["pad", *ids]).slice(1 + start)
    np.testing.assert_array_equal(item_hash(sliced, seed), whole[start:])
    np.testing.assert_array_equal(item_folds(pa.array(ids[::-1]), seed), folds_of(whole)[::-1])
    assert ((0 <= hash_unit(whole)) & (hash_unit(whole) < 1)).all()
