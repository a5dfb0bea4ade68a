"""Fingerprints of embeddings (tasks/fingerprint.py) against a brute-force reference, and the night's row choice."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tasks.fingerprint import _MIX, _multipliers, _reason_hash, fingerprints
from tasks.night import SELECTION_SCHEMA, Selection
from tasks.sources import matrix

MASK = 2**64 - 1


def batch(rows: list[list[float] | None], dim: int) -> pa.RecordBatch:
    return pa.record_batch({"a_embedding": pa.array(rows, pa.list_(pa.float32()))})


def reference(rows: list[list[float] | None], dim: int) -> list[int]:
    """One modality, in Python integers: sum of each float32 word times its multiplier, mod 2^64, mixed."""
    weights = [int(w) for w in _multipliers(dim)]
    out = []
    for row in rows:
        x = None if row is None else np.asarray(row, np.float32)
        if x is None or len(x) != dim or not np.isfinite(x).all() or np.einsum("i,i", x, x) == 0:  # float32 norm
            reason = matrix(batch([row], dim), "a", dim).reasons[0]
            own = int(_reason_hash(reason))
        else:
            own = sum(int(word) * w for word, w in zip(x.view(np.uint32), weights)) & MASK
        out.append((own * int(_MIX)) & MASK)
    return out


floats = st.floats(-10, 10, width=32, allow_nan=False)
row = st.one_of(st.none(), st.lists(floats, min_size=4, max_size=4), st.lists(floats, min_size=3, max_size=3),
                st.just([0.0] * 4), st.just([float("nan"), 1.0, 1.0, 1.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(row, min_size=1, max_size=20))
def test_fingerprints_equal_the_brute_force_reference(rows):
    got = fingerprints([matrix(batch(rows, 4), "a", 4)], len(rows))
    assert got.tolist() == reference(rows, 4)


def test_fingerprints_of_wide_embeddings_equal_the_brute_force_reference():
    """768-d rows: the sums run through einsum's vectorized loops, in any order modulo 2^64."""
    rows = np.random.default_rng(3).standard_normal((5, 768)).astype(np.float32).tolist()
    assert fingerprints([matrix(batch(rows, 768), "a", 768)], 5).tolist() == reference(rows, 768)


@settings(max_examples=200, deadline=None)
@given(st.lists(floats, min_size=8, max_size=8), st.integers(0, 7), st.integers(0, 31))
def test_one_flipped_bit_changes_the_fingerprint(values, position, bit):
    x = np.asarray(values, np.float32)
    if not np.isfinite(x).all() or not x.any():
        return
    flipped = x.copy()
    flipped.view(np.uint32)[position] ^= np.uint32(1 << bit)
    if not np.isfinite(flipped).all() or not flipped.any():
        return
    rows = [x.tolist(), flipped.tolist()]
    usable = matrix(batch(rows, 8), "a", 8)
    # rows whose float32 square norm underflows to 0 are rejected as all-zero, and hash to that reason
    assume(usable.valid.all())
    first, second = fingerprints([usable], 2)
    assert first != second


def test_fingerprints_combine_modalities_in_order_and_ignore_batching():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((10, 4)).astype(np.float32), rng.standard_normal((10, 3)).astype(np.float32)
    table = pa.table({"a_embedding": pa.array(a.tolist(), pa.list_(pa.float32())),
                      "b_embedding": pa.array(b.tolist(), pa.list_(pa.float32()))})
    whole = fingerprints([matrix(table.to_batches()[0], "a", 4), matrix(table.to_batches()[0], "b", 3)], 10)
    parts = np.concatenate([fingerprints([matrix(part, "a", 4), matrix(part, "b", 3)], part.num_rows)
                            for part in table.to_batches(max_chunksize=3)])
    assert whole.tolist() == parts.tolist()
    swapped = fingerprints([matrix(table.to_batches()[0], "b", 3), matrix(table.to_batches()[0], "a", 4)], 10)
    assert not np.any(whole == swapped)


def test_a_selection_labels_the_listed_ids_or_the_ones_whose_fingerprint_changed(tmp_path):
    path = tmp_path / "selection.parquet"
    pq.write_table(pa.table({"item_id": ["a", "b"], "fingerprint": pa.array([1, 2], pa.uint64())},
                            schema=SELECTION_SCHEMA), path)
    ids, prints = pa.array(["a", "b", "c"]), np.array([1, 5, 7], np.uint64)
    # a: unchanged, skipped; b: changed; c: not known, so new
    assert Selection(str(path), listed=False).chooser()(ids, prints).tolist() == [False, True, True]
    # listed: a listed id without a fingerprint is labelled, one with a fingerprint (no recorded version) only if
    # that changed; an id not listed is not
    pq.write_table(pa.table({"item_id": ["a", "b", "d"], "fingerprint": pa.array([None, 2, 9], pa.uint64())},
                            schema=SELECTION_SCHEMA), path)
    ids, prints = pa.array(["a", "b", "c", "d"]), np.array([1, 5, 7, 9], np.uint64)
    assert Selection(str(path), listed=True).chooser()(ids, prints).tolist() == [True, True, False, False]
