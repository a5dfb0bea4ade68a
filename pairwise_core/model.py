"""A fitted model as data: the three parts the labelling pass applies, each as plain arrays and a small state.

Every fitted object labelling needs (``PairwiseClassifier``, ``MixtureRefiner``,
``FoldDiscriminant``, and the parts below that hold them) has one protocol:
``to_arrays() -> (arrays, state)`` and the classmethod
``from_arrays(arrays, state)``. The arrays are numeric or fixed-width unicode
numpy arrays (never object arrays), the state a dict of JSON values. The
pipeline writes them as files and labels from files (a stored model), so
nothing it reads back can run code, and the same (item, model) gives the same
label on every path. No I/O here.

A model is three parts, and a fourth that labelling does not apply:
- ``Classifiers``: the class names and, per modality, the fitted tourney;
- ``Refinement``: per modality the mixture, and the confidence weights (and the parent confidence's
  powers, when calibrated against gold labels with a parent level);
- ``Review``: the route that judges given labels (only with given labels);
- ``DriftReference``: a seeded share of the fit sample, what a night's items are compared with
  (``pairwise_core.drift``; models stored before it have none).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any, Literal, Protocol, Self

import numpy as np

from pairwise_core.classifier import PairwiseClassifier
from pairwise_core.discriminant import FoldDiscriminant
from pairwise_core.hierarchy import Level, ParentPowers
from pairwise_core.refine import MixtureRefiner, log_softmax

Arrays = dict[str, np.ndarray]
State = dict[str, Any]
Route = Literal["zero-shot", "label-aware", "both"]


class Fitted(Protocol):
    """What the model store needs of a fitted object: its state as plain arrays, and back."""

    def to_arrays(self) -> tuple[Arrays, State]: ...

    @classmethod
    def from_arrays(cls, arrays: Arrays, state: State) -> Self: ...


def nest(prefix: str, arrays: Arrays) -> Arrays:
    """``arrays`` under ``prefix/``: a part's arrays hold those of the objects inside it."""
    return {f"{prefix}/{name}": value for name, value in arrays.items()}


def unnest(prefix: str, arrays: Arrays) -> Arrays:
    """The arrays ``nest`` put under ``prefix/``."""
    start = f"{prefix}/"
    return {name.removeprefix(start): value for name, value in arrays.items() if name.startswith(start)}


@dataclass
class Classifiers:
    """The class names, and per modality the fitted classifier (modalities in the catalog's order)."""

    class_names: tuple[str, ...]
    models: dict[str, PairwiseClassifier]

    def to_arrays(self) -> tuple[Arrays, State]:
        arrays: Arrays = {"class_names": np.array(self.class_names, dtype=str)}  # fixed-width unicode
        states = []
        for i, model in enumerate(self.models.values()):  # by position: a modality's name is any string
            model_arrays, state = model.to_arrays()
            arrays |= nest(str(i), model_arrays)
            states.append(state)
        return arrays, {"modalities": list(self.models), "models": states}

    @classmethod
    def from_arrays(cls, arrays: Arrays, state: State) -> Classifiers:
        """One thread per modality: deriving each classifier's pair weights is most of a model's load with many
        classes, and numpy releases the GIL in most of it (K = 500, two modalities, fresh processes: 1.0-2.1 s ->
        0.6-1.2 s)."""
        parts = [(unnest(str(i), arrays), model_state) for i, model_state in enumerate(state["models"])]
        with ThreadPoolExecutor(max(1, len(parts))) as pool:
            built = list(pool.map(lambda part: PairwiseClassifier.from_arrays(*part), parts))
        return cls(tuple(arrays["class_names"].tolist()), dict(zip(state["modalities"], built, strict=True)))


@dataclass
class Refinement:
    """What the labelling pass applies after the tourney.

    ``view_weights`` and ``joint_weights`` are (folds, modalities): an item
    in fold f takes row f, which was fitted without fold f's sample rows.
    ``parent_powers``: the parent confidence's calibration, fitted out of
    fold the same way, when the classes have parents and the calibration is
    'gold'; None otherwise, and in models stored before it (the parent
    confidence is then the plain sum of the children's probabilities).
    """

    refiners: dict[str, MixtureRefiner]
    view_weights: np.ndarray
    joint_weights: np.ndarray
    calibration: str  # 'gold': out of fold against the catalog's labels; 'label-free'
    free_weights: np.ndarray  # (modalities,) the label-free joint weights: the review's zero-shot evidence
    parent_powers: ParentPowers | None = None

    def parent_powers_for(self, level: Level | None) -> ParentPowers | None:
        """The parent powers if they were fitted for these parents (a relabel with --model may bring others:
        those get the plain sum), else None."""
        return self.parent_powers if level is not None and self.parent_powers is not None \
            and self.parent_powers.level == level else None

    def to_arrays(self) -> tuple[Arrays, State]:
        arrays = {"view_weights": self.view_weights, "joint_weights": self.joint_weights,
                  "free_weights": self.free_weights}
        states = []
        for i, refiner in enumerate(self.refiners.values()):
            refiner_arrays, state = refiner.to_arrays()
            arrays |= nest(f"refiner/{i}", refiner_arrays)
            states.append(state)
        state = {"modalities": list(self.refiners), "refiners": states, "calibration": self.calibration}
        if self.parent_powers is not None:
            parent_arrays, state["parent_powers"] = self.parent_powers.to_arrays()
            arrays |= nest("parent_powers", parent_arrays)
        return arrays, state

    @classmethod
    def from_arrays(cls, arrays: Arrays, state: State) -> Refinement:
        refiners = {m: MixtureRefiner.from_arrays(unnest(f"refiner/{i}", arrays), refiner_state)
                    for i, (m, refiner_state) in enumerate(zip(state["modalities"], state["refiners"], strict=True))}
        parent_state = state.get("parent_powers")  # absent in models stored before the parent calibration
        parent_powers = None if parent_state is None else ParentPowers.from_arrays(
            unnest("parent_powers", arrays), parent_state)
        return cls(refiners, arrays["view_weights"], arrays["joint_weights"], state["calibration"],
                   arrays["free_weights"], parent_powers)


@dataclass
class Review:
    """What the label pass applies to each item with a given label."""

    route: Route
    discriminant: FoldDiscriminant | None  # None for the zero-shot route
    weights: np.ndarray  # (2,) for 'both': of the label-aware and the zero-shot log posteriors
    keep_below: float  # annotation_issues keeps the items whose p_given is below this (1: every item)

    @classmethod
    def zero_shot(cls, keep_below: float) -> Review:
        """The route that never reads the given labels: the refined joint posterior alone."""
        return cls("zero-shot", None, np.array([0.0, 1.0]), keep_below)

    def as_run_asks(self, requested: str, keep_below: float) -> Review:
        """This review as a run applies it: ``requested`` 'zero-shot' reads the joint posterior alone,
        'label-aware' the discriminant alone (a model fitted for 'both' holds it), 'auto' or 'both' the
        route fitted; ``keep_below`` is the run's own (a stored model's was its fit's)."""
        if requested == "zero-shot" or self.discriminant is None:
            return Review.zero_shot(keep_below)
        return replace(self, route="label-aware" if requested == "label-aware" else self.route,
                       keep_below=keep_below)

    def judge(self, zero_shot: np.ndarray, xs: list[np.ndarray], scales: list[np.ndarray], present: np.ndarray,
              fold: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the route's log posterior, the label-aware one or None), both (n, K), from the zero-shot log
        posterior and the items' embeddings and inverse norms per modality."""
        if self.discriminant is None:
            return zero_shot, None
        aware = self.discriminant.log_posterior(xs, present, fold, scales)
        if self.route == "label-aware":
            return aware, aware
        return combine(aware, zero_shot, self.weights), aware

    def to_arrays(self) -> tuple[Arrays, State]:
        arrays: Arrays = {"weights": self.weights}
        state: State = {"route": self.route, "keep_below": self.keep_below, "discriminant": None}
        if self.discriminant is not None:
            discriminant_arrays, state["discriminant"] = self.discriminant.to_arrays()
            arrays |= nest("discriminant", discriminant_arrays)
        return arrays, state

    @classmethod
    def from_arrays(cls, arrays: Arrays, state: State) -> Review:
        discriminant = None
        if state["discriminant"] is not None:
            discriminant = FoldDiscriminant.from_arrays(unnest("discriminant", arrays), state["discriminant"])
        return cls(state["route"], discriminant, arrays["weights"], state["keep_below"])


def combine(aware: np.ndarray, zero_shot: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The two routes' log posteriors weighted and renormalized: a product of experts."""
    return log_softmax(weights[0] * aware + weights[1] * zero_shot)


@dataclass
class DriftReference:
    """What the model was fitted on, kept small: the baseline of the nightly drift tests.

    ``x``: per modality, at most ``drift.SAMPLE_ROWS`` usable rows of the fit
    sample (float32); ``labels``: the joint (consensus) class ids of at most
    ``drift.SAMPLE_ROWS`` seeded rows of it, as the labelling pass would give them.
    """

    x: dict[str, np.ndarray]
    labels: np.ndarray

    def to_arrays(self) -> tuple[Arrays, State]:
        arrays: Arrays = {"labels": self.labels.astype(np.int64, copy=False)}
        for i, x in enumerate(self.x.values()):  # by position, as Classifiers: a modality's name is any string
            arrays[f"x/{i}"] = x.astype(np.float32, copy=False)
        return arrays, {"modalities": list(self.x)}

    @classmethod
    def from_arrays(cls, arrays: Arrays, state: State) -> DriftReference:
        return cls({m: arrays[f"x/{i}"] for i, m in enumerate(state["modalities"])}, arrays["labels"])
