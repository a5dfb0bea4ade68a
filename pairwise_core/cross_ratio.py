"""The cross-deviation ratio (METHOD.md steps 3-4), from moments.

For one dimension and two sets A and B::

    crossvar = mean over all (x in A, y in B) of (x - y)^2 / 2
             = ((mean_A - mean_B)^2 + var_A + var_B) / 2
    ratio    = sqrt(crossvar / (sd_A * sd_B))

The closed form needs only count, sum and sum of squares per set, so it
streams and merges; the all-pairs broadcast of the original never happens.

Zero variance makes the ratio 0/0 or x/0. The convention here: a variance
below ``ZERO_VARIANCE_RTOL`` times the mean square counts as zero (float64
cancellation leaves crumbs of that size); then the ratio is 1 where the two
sets are the same constant (no evidence either way) and +inf where they
differ (the dimension separates them perfectly).
"""

from __future__ import annotations

import numpy as np

ZERO_VARIANCE_RTOL = 1e-12


def moments_ratio(
    n_a: np.ndarray | float,
    sum_a: np.ndarray,
    sumsq_a: np.ndarray,
    n_b: np.ndarray | float,
    sum_b: np.ndarray,
    sumsq_b: np.ndarray,
) -> np.ndarray:
    """Cross-deviation ratio from per-set count, sum and sum of squares.

    All arguments broadcast together, so one call serves one pair or all
    K x K pairs at once. Counts must be positive where the result is used.
    """
    side_a, side_b = spread(n_a, sum_a, sumsq_a), spread(n_b, sum_b, sumsq_b)
    shape = np.broadcast_shapes(*(array.shape for array in side_a + side_b))
    return spread_ratio(*(np.array(np.broadcast_to(array, shape)) for array in side_a + side_b))


def spread(n: np.ndarray | float, total: np.ndarray, total_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance (rounding crumbs snapped to zero) and standard deviation of sets from their moments:
    all that ``spread_ratio`` needs of each side, so a set met in many pairs is worked out once."""
    shape = np.broadcast_shapes(np.shape(n), total.shape, total_sq.shape)
    return spread_in_place(n, np.array(np.broadcast_to(total, shape), np.float64),
                           np.array(np.broadcast_to(total_sq, shape), np.float64))


def spread_in_place(n: np.ndarray | float, total: np.ndarray, total_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``spread`` of float64 ``total`` and ``total_sq``, which it overwrites with the mean and the
    standard deviation (returned in their memory; the variance is the one new array)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        n = np.asarray(n, np.float64)
        mean = np.divide(total, n, out=total)
        mean_sq = np.divide(total_sq, n, out=total_sq)
        var = np.multiply(mean, mean)
        np.subtract(mean_sq, var, out=var)
        var[var <= np.multiply(mean_sq, ZERO_VARIANCE_RTOL, out=mean_sq)] = 0.0  # rounding crumbs
        return mean, var, np.sqrt(var, out=mean_sq)


def spread_ratio(
    mean_a: np.ndarray, var_a: np.ndarray, sd_a: np.ndarray, mean_b: np.ndarray, var_b: np.ndarray, sd_b: np.ndarray,
) -> np.ndarray:
    """The cross-deviation ratio from both sides' ``spread``: six float64 arrays of one shape, which it
    overwrites (the result is returned in ``mean_b``'s memory), so it needs no temporaries of that size
    but a boolean one."""
    with np.errstate(divide="ignore", invalid="ignore"):
        crossvar = np.subtract(mean_a, mean_b, out=mean_a)
        np.multiply(crossvar, crossvar, out=crossvar)
        # (var_a + var_b) grouped so that swapping A and B gives bit-identical results
        np.add(crossvar, np.add(var_a, var_b, out=var_a), out=crossvar)
        np.divide(crossvar, 2.0, out=crossvar)
        sd_product = np.multiply(sd_a, sd_b, out=sd_a)
        ratio = np.divide(crossvar, sd_product, out=mean_b)
        np.sqrt(ratio, out=ratio)
        np.maximum(ratio, 1.0, out=ratio)
        degenerate = sd_product == 0.0
        if degenerate.any():
            # the same constant in both sets: no evidence either way; different constants: a perfect separation
            ratio[degenerate] = np.where(crossvar[degenerate] > 0.0, np.inf, 1.0)
        return ratio


def cross_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross-deviation ratio per dimension between the rows of ``a`` and ``b``.

    Parameters
    ----------
    a, b : array of shape (n_a, d) and (n_b, d)
        The two sets; a 1-D array is one dimension (d = 1).

    Returns
    -------
    ndarray of shape (d,)
        Always >= 1 (arithmetic vs geometric mean of the variances); 1 when
        both sets have the same mean and spread; large when the dimension
        separates them. See the module docstring for zero variance.
    """
    a64 = np.asarray(a, dtype=np.float64)
    b64 = np.asarray(b, dtype=np.float64)
    a64 = a64[:, None] if a64.ndim == 1 else a64
    b64 = b64[:, None] if b64.ndim == 1 else b64
    if a64.ndim != 2 or b64.ndim != 2 or a64.shape[1] != b64.shape[1]:
        raise ValueError(f"cross_ratio needs two (n, d) arrays with the same d, got {a64.shape} and {b64.shape}")
    if a64.shape[0] == 0 or b64.shape[0] == 0:
        raise ValueError("cross_ratio needs at least one row in each set")
    if not (np.isfinite(a64).all() and np.isfinite(b64).all()):
        raise ValueError("cross_ratio input has NaN or Inf")
    return moments_ratio(
        a64.shape[0], a64.sum(0), (a64 * a64).sum(0),
        b64.shape[0], b64.sum(0), (b64 * b64).sum(0),
    )


def top_n(ratios: np.ndarray, n: int) -> np.ndarray:
    """Per row, the n dimensions with the largest ratios (NaN lowest, ties to the lower dimension).

    The same set a stable descending sort would keep, found with one
    partition per row (O(d)) instead of a sort; ties are counted off in
    order only in the rows that have more of them than places left.
    """
    nan = np.isnan(ratios)
    values = np.where(nan, -np.inf, ratios) if nan.any() else ratios
    d = values.shape[1]
    kth = np.partition(values, d - n, axis=1)[:, d - n : d - n + 1]  # each row's n-th largest
    keep = values > kth
    tied = values == kth
    places = n - np.count_nonzero(keep, axis=1)  # >= 1: the n-th largest itself is not above it
    crowded = np.flatnonzero(np.count_nonzero(tied, axis=1) > places)
    keep |= tied
    if crowded.size:
        keep[crowded] &= ~tied[crowded] | (np.cumsum(tied[crowded], axis=1) <= places[crowded, None])
    return keep
