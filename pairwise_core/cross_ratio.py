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
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_a, var_a = _mean_var(np.asarray(n_a, np.float64), sum_a, sumsq_a)
        mean_b, var_b = _mean_var(np.asarray(n_b, np.float64), sum_b, sumsq_b)
        # (var_a + var_b) grouped so that swapping A and B gives bit-identical results
        crossvar = ((mean_a - mean_b) ** 2 + (var_a + var_b)) / 2.0
        sd_product = np.sqrt(var_a) * np.sqrt(var_b)
        degenerate = sd_product == 0.0
        ratio = np.sqrt(crossvar / np.where(degenerate, 1.0, sd_product))
        constant_ratio = np.where(crossvar > 0.0, np.inf, 1.0)
        return np.where(degenerate, constant_ratio, np.maximum(ratio, 1.0))


def _mean_var(n: np.ndarray, total: np.ndarray, total_sq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population variance, with rounding crumbs snapped to zero."""
    mean = total / n
    mean_sq = total_sq / n
    var = mean_sq - mean * mean
    var = np.where(var <= ZERO_VARIANCE_RTOL * mean_sq, 0.0, var)
    return mean, var


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
    partition per row (O(d)) instead of a sort.
    """
    values = np.nan_to_num(ratios, nan=-np.inf)
    kth = -np.partition(-values, n - 1, axis=1)[:, n - 1 : n]  # each row's n-th largest
    above = values > kth
    tied = values == kth
    return above | (tied & (np.cumsum(tied, axis=1) <= n - above.sum(axis=1, keepdims=True)))
