"""A coarser level of the taxonomy: each class has one parent, and a parent's probability is the sum of its
children's.

The parent label is the argmax of the summed probabilities of the posterior that gives the leaf label, which
may differ from the parent of the leaf label: an item split between two sibling classes is surely in their
parent even when neither child wins (CHiLS, Novack et al. 2023, gains up to 30 points at the coarse level this
way). More levels are more ``Level``s, each over the names of the one below.

The sum alone is not calibrated, even where the leaf posterior is: the leaf calibration fits one temperature
by the likelihood of the leaf labels, and a posterior flat enough to be honest about 330 leaves spreads mass
over the wrong parents too. On the two WordNet development catalogs the summed parent confidence was
underconfident (gold ECE 0.08-0.17 against 0.01-0.06 at the leaves; joint parent confidences of 0.3-0.4
were right 52% of the time). So where the leaf posterior is calibrated against gold labels, the parent confidence
is too, with one more parameter: the power a of ``sharpen``, q_j proportional to P_j^a over the summed
parent distribution P, fitted by the parents' likelihood (``fit_power``). A power is monotone, so it keeps
every row's parent label (the argmax of P is one of q). One parameter because the label must not move: a
map with a weight or bias per parent could change the argmax, and the leaf calibration is one temperature
per modality too; the fit is convex, and one number is well determined by the few thousand labelled rows
of a fold's complement. ``ParentPowers`` holds the fitted powers. Without gold labels nothing says how
wrong the sum is: the confidence stays the plain sum.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairwise_core.joint import fit_weights

# The fitted power is kept at or above this: a power of 0 would make every parent equally likely (the label
# then an arbitrary tie), and 0 * log 0 is undefined.
MIN_POWER = 1e-2


@dataclass(frozen=True)
class Level:
    """The parents' names, and for each class of the level below the index of its parent among them."""

    names: tuple[str, ...]
    index: tuple[int, ...]

    @classmethod
    def of(cls, parents: Sequence[str]) -> Level:
        """The level of one parent name per class, its names in order of first appearance."""
        names = tuple(dict.fromkeys(parents))
        position = {name: i for i, name in enumerate(names)}
        return cls(names, tuple(position[parent] for parent in parents))

    def crossed_names(self, class_names: Sequence[str]) -> list[tuple[str, str]]:
        """(name, its parent as a class) for each parent name that is also a class under another parent
        (``cat -> dog``, ``dog -> animal``): one name then stands for two groups, a class and its own parent's
        other children, likely a deeper taxonomy flattened. A class named like its own parent is not listed."""
        parent_of = {name: self.names[i] for name, i in zip(class_names, self.index, strict=True)}
        return [(name, parent_of[name]) for name in self.names if parent_of.get(name, name) != name]

    def probabilities(self, p: np.ndarray) -> np.ndarray:
        """(n, parents) from the children's probabilities ``p`` (n, classes): each parent's children summed."""
        return parent_probabilities(p, np.asarray(self.index), len(self.names))

    def log_probabilities(self, log_p: np.ndarray) -> np.ndarray:
        """(n, parents) float64 log probabilities from the children's ``log_p`` (n, classes): each parent's
        children's log-sum-exp, finite wherever ``log_p`` is (a far parent's probability does not underflow)."""
        log_p = np.asarray(log_p, np.float64)
        index = np.asarray(self.index)
        out = np.empty((len(log_p), len(self.names)))
        for j in range(len(self.names)):
            children = log_p[:, index == j]
            peak = children.max(axis=1)
            out[:, j] = peak + np.log(np.exp(children - peak[:, None]).sum(axis=1))
        return out

    def labels(self, p: np.ndarray, power: np.ndarray | float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each row's parent (an index into ``names``) and its confidence, from ``p`` (n, classes): the
        argmax of the summed probabilities P, and P at it, or with ``power`` (a number, or one per row) q at
        it, q the sharpened P (``sharpen``), but never below the probability of the parent's likeliest child.
        The confidence is at most 1 (a sum may pass 1 by rounding).

        The floor: a parent is at least as likely as each of its children, and a power below 1 (fitted where
        the sum was overconfident) flattens P enough to break that (a parent at 0.5333 over its child at
        0.5414, fitted power 0.99, parents drawn at random): the two levels then disagreed in one row."""
        parents = self.probabilities(p)
        label = parents.argmax(axis=1)
        rows = np.arange(label.size)
        if power is None:
            confidence = parents[rows, label]
        else:
            confidence = np.maximum(sharpen(parents, power, label)[rows, label], self._top_child(p, label))
        return label, np.minimum(confidence, 1.0)

    def _top_child(self, p: np.ndarray, label: np.ndarray) -> np.ndarray:
        """(n,): the largest probability in ``p`` (n, classes) among the children of each row's parent ``label``.
        Most rows' likeliest class is such a child: only the others are searched among that parent's children
        (K = 500: a gather of every row's K columns by parent took 1.1 of pass 2's 21 CPU-s)."""
        p = np.asarray(p)
        index = np.asarray(self.index)
        top = p.argmax(axis=1)
        best = p[np.arange(len(p)), top]
        other = np.flatnonzero(index[top] != label)
        if other.size:
            best[other] = np.where(index == label[other, None], p[other], -np.inf).max(axis=1)
        return best


def parent_probabilities(p: np.ndarray, index: np.ndarray, n_parents: int) -> np.ndarray:
    """(n, n_parents): column j sums the columns k of ``p`` (n, K) with ``index[k] == j``, in p's float
    precision (float32 probabilities are not copied to float64: at K = 500 that copy cost more than the sum)."""
    dtype = p.dtype if p.dtype in (np.float32, np.float64) else np.float64
    members = np.zeros((index.size, n_parents), dtype=dtype)
    members[np.arange(index.size), index] = 1.0
    return np.asarray(p, dtype) @ members


def sharpen(parents: np.ndarray, power: np.ndarray | float, label: np.ndarray | None = None) -> np.ndarray:
    """(n, P): q_j = P_j^a / sum_i P_i^a per row of ``parents`` P (n, P), ``power`` a > 0 a number or one per
    row; a = 1 gives P itself (renormalized), a > 1 a sharper distribution, a < 1 a flatter one.

    Computed as exp(a (log P_j - log P_top)) over its sum, ``label`` the rows' argmax of P (computed when not
    given): each entry lies in [0, 1], the top one is 1 / the sum, and a parent with P = 0 stays 0. The map
    is monotone in P, so the argmax of P is an argmax of q.
    """
    parents = np.asarray(parents)
    rows = np.arange(len(parents))
    label = parents.argmax(axis=1) if label is None else label
    with np.errstate(divide="ignore"):
        shifted = np.log(parents)
    shifted -= shifted[rows, label][:, None]
    shifted *= np.asarray(power, shifted.dtype).reshape(-1, 1)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=1, keepdims=True)
    return shifted


def fit_power(log_parents: np.ndarray, labels: np.ndarray) -> float:
    """The power a (>= ``MIN_POWER``) that maximizes the likelihood of the parent ``labels`` (n,) under
    ``sharpen`` of the parent distributions given as ``log_parents`` (n, P) (``Level.log_probabilities``).

    log q_y = a log P_y - log sum_j P_j^a is concave in a: the one-modality case of the joint weights' fit
    (``joint.fit_weights``, terms log P). No rows: 1, the plain sum.
    """
    if len(labels) == 0:
        return 1.0
    terms = np.asarray(log_parents, np.float64)[:, None, :]
    return max(float(fit_weights(terms, np.ones((len(labels), 1), bool), labels)[0]), MIN_POWER)


@dataclass
class ParentPowers:
    """The parent confidence's calibration, out of fold: the power of ``sharpen`` an item in fold f takes,
    per modality (``view``, (folds, modalities)) and for the joint posterior (``joint``, (folds,)), fitted
    for the parents of ``level``. Stored with the model's refinement (``pairwise_core.model``)."""

    level: Level
    view: np.ndarray
    joint: np.ndarray

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"names": np.array(self.level.names, dtype=str), "index": np.array(self.level.index, np.int64),
                "view": self.view, "joint": self.joint}, {}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> ParentPowers:
        level = Level(tuple(arrays["names"].tolist()), tuple(int(i) for i in arrays["index"]))
        return cls(level, arrays["view"], arrays["joint"])
