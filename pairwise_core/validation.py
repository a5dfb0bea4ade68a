"""Input and parameter checks, in one place, with one error style.

Every check raises ``ValueError`` with a one-line message that names the
argument, the problem and (for bad rows) the first offending row indices, so
the pipeline can show it to a user as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np

_MAX_ROWS_SHOWN = 5


@dataclass(frozen=True)
class Interval:
    """A numeric constraint: ``kind`` between low and high (None = unbounded), finite; ``closed`` says which
    ends belong to it, as in scikit-learn: "both", "left", "right" or "neither"."""

    kind: type
    low: float | None
    high: float | None
    allow_none: bool = False
    closed: Literal["both", "left", "right", "neither"] = "both"

    @property
    def left_closed(self) -> bool:
        return self.closed in ("both", "left")

    @property
    def right_closed(self) -> bool:
        return self.closed in ("both", "right")

    def check(self, name: str, value: Any) -> None:
        if value is None and self.allow_none:
            return
        integral = self.kind is Integral
        ok_type = isinstance(value, Integral) if integral else isinstance(value, Real)
        if not ok_type or isinstance(value, bool):
            expected = "an integer" if integral else "a number"
            raise ValueError(f"{name} must be {expected}{' or None' if self.allow_none else ''}, got {value!r}")
        if not np.isfinite(float(value)):
            raise ValueError(f"{name} must be finite, got {value!r}")
        below = self.low is not None and (value < self.low if self.left_closed else value <= self.low)
        above = self.high is not None and (value > self.high if self.right_closed else value >= self.high)
        if below or above:
            low = "-inf" if self.low is None else self.low
            high = "inf" if self.high is None else self.high
            raise ValueError(f"{name} must be in {'[' if self.left_closed else '('}{low}, {high}"
                             f"{']' if self.right_closed else ')'}, got {value!r}")


@dataclass(frozen=True)
class Options:
    """A string constraint: one of a fixed set."""

    values: frozenset[str]

    def check(self, name: str, value: Any) -> None:
        if value not in self.values:
            raise ValueError(f"{name} must be one of {sorted(self.values)}, got {value!r}")


def check_params(params: dict[str, Any], constraints: dict[str, Interval | Options]) -> None:
    """Check every parameter against its declared constraint."""
    for name, constraint in constraints.items():
        constraint.check(name, params[name])


def _rows(mask: np.ndarray, offset: int = 0, classes: Sequence[str] | None = None) -> str:
    """Where ``mask`` holds: "in rows 3, 7", or with the rows' ``classes`` "for classes dog, cat" (a classes
    file's row number sent the user counting)."""
    idx = np.flatnonzero(mask) + offset
    shown = ", ".join(str(i) if classes is None else classes[i] for i in idx[:_MAX_ROWS_SHOWN])
    more = f" and {idx.size - _MAX_ROWS_SHOWN} more" if idx.size > _MAX_ROWS_SHOWN else ""
    return f"in rows {shown}{more}" if classes is None else f"for classes {shown}{more}"


def check_matrix(x: Any, name: str, *, n_features: int | None = None) -> np.ndarray:
    """Return ``x`` as a non-empty 2-D float array of the right width, or raise.

    float32 input stays float32 (no copy); anything else becomes float64.
    Row values are checked by ``check_rows``.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold numbers, got dtype {arr.dtype}")
    if arr.dtype != np.float32:
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (items x dimensions), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: no rows")
    if arr.shape[1] == 0:
        raise ValueError(f"{name} has no dimensions")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{name} has {arr.shape[1]} dimensions, expected {n_features}")
    return arr


def check_rows(rows: np.ndarray, name: str, *, offset: int = 0, square_norms: np.ndarray | None = None,
               classes: Sequence[str] | None = None) -> np.ndarray:
    """Square norms of ``rows``, after checking every row is finite and non-zero.

    One pass: a NaN or Inf anywhere makes the row's square norm non-finite,
    and only an all-zero row has square norm 0. ``offset`` is the index of
    the first row in the caller's numbering, for the message. ``square_norms``: the rows' square norms as
    this computes them (``np.einsum("ij,ij->i", rows, rows)``), when the caller has them already; they are
    checked, not computed again. ``classes``: the rows' class names, which the messages then give.
    """
    if square_norms is None:
        square_norms = np.einsum("ij,ij->i", rows, rows)
    elif square_norms.shape != rows.shape[:1]:
        raise ValueError(f"square_norms must be of shape ({rows.shape[0]},), got {square_norms.shape}")
    if not np.isfinite(square_norms).all():
        finite = np.isfinite(rows).all(axis=1)  # precise, only on the rare bad path
        if not finite.all():
            raise ValueError(f"{name} has NaN or Inf {_rows(~finite, offset, classes)}")
        raise ValueError(f"{name} has values too large for float32 (the square norm overflows) "
                         f"{_rows(~np.isfinite(square_norms), offset, classes)}")
    zero = square_norms == 0
    if zero.any():
        tiny = zero & (rows != 0).any(axis=1)
        if tiny.any():
            raise ValueError(f"{name} has values too small for float32 (the square norm underflows) "
                             f"{_rows(tiny, offset, classes)}")
        raise ValueError(f"{name} has all-zero vectors {_rows(zero, offset, classes)}")
    return square_norms


def check_embeddings(x: Any, name: str, *, n_features: int | None = None,
                     classes: Sequence[str] | None = None) -> np.ndarray:
    """``check_matrix`` and ``check_rows`` over the whole array (``classes``: the rows' class names)."""
    arr = check_matrix(x, name, n_features=n_features)
    check_rows(arr, name, classes=classes)
    return arr


def check_labels(y: Any, name: str) -> np.ndarray:
    """Return ``y`` as a 1-D non-negative integer array, or raise."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer class ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} has negative class ids {_rows(arr < 0)}")
    return arr
