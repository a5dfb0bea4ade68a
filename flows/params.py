"""The parameters of a run, apart from the flow so that the CLI reads them without importing Prefect.

ReclassifyParams is the one place their defaults and descriptions live: the
Prefect UI renders it as the run's form, and `pairwise run` makes one option
per field from it (help = description, default = default).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pairwise_core import MixtureRefiner, PairwiseClassifier
from pairwise_core.classifier import DEFAULT_CANDIDATES, PRUNE_ABOVE
from pairwise_core.graph import REFERENCE_ITEMS

_CORE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(PairwiseClassifier).parameters.items() if p.kind == p.KEYWORD_ONLY
}
_REFINE_DEFAULTS = {
    name: p.default for name, p in inspect.signature(MixtureRefiner).parameters.items() if p.kind == p.KEYWORD_ONLY
}


def _refine_bounds(name: str) -> dict[str, Any]:
    """The pydantic bounds of a refinement option: the interval the core declares (MixtureRefiner, where the
    reasons are), so that a value the run would refuse is refused before it starts."""
    interval = MixtureRefiner._constraints[name]
    bounds: dict[str, Any] = {}
    if interval.low is not None:
        bounds["ge" if interval.left_closed else "gt"] = interval.low
    if interval.high is not None:
        bounds["le" if interval.right_closed else "lt"] = interval.high
    return bounds


# The Dask schedulers a run may use, comma-separated, read from the environment of the flow's process.
DASK_ALLOWED = "PAIRWISE_DASK_ALLOWED"
TRUSTED_DASK = "trusted_dask_address"  # validation context: the address typed on `pairwise run`'s command line


def allowed_dask_addresses() -> set[str]:
    return {address.strip() for address in os.environ.get(DASK_ALLOWED, "").split(",") if address.strip()}


def dask_address_form(address: str) -> str:
    """The address if Dask can connect to one of its form (scheme://host:port, the dask extra installed); else
    ValueError, one line. Checked with the parameters, before anything is written: Dask's own check came after
    the run had registered (its failed row, and an exit code 2 that says nothing was written)."""
    if importlib.util.find_spec("prefect_dask") is None:
        raise ValueError("running on Dask needs the dask extra: pip install -c constraints.txt '.[dask]'")
    from distributed.comm.addressing import get_address_host_port

    try:
        _, port = get_address_host_port(address)
    except ValueError as error:
        raise ValueError(f"{address}: not a Dask scheduler address, expected tcp://HOST:PORT ({error})") from None
    if not 0 < port < 65536:
        raise ValueError(f"{address}: not a Dask scheduler address, port {port} is outside 1-65535")
    return address


RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# The seed is folded into 64-bit item hashes (tasks/sample.py, item_hash): a larger one failed the started run
# (OverflowError, exit 1, a failed row in runs) instead of being refused as bad input.
MAX_SEED = 2**64 - 1


class ReclassifyParams(BaseModel):
    """Parameters of a reclassification run (the Prefect UI renders them as a form)."""

    # every number finite, as the core's intervals require (pairwise_core/validation.py): NaN was refused for a
    # bound it fails ("greater than or equal to 0"), and inf passed --cutoff and --pair-margin to fail the started run
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    # min_length: an empty one was taken for a path, "pairwise: : no such file"
    items: str = Field(min_length=1, description="Items: a Parquet path, directory or glob, an s3:// or gs:// URI, or "
                       "table:NAME in the DuckDB file")
    classes: str = Field(min_length=1, description="Classes: a Parquet path, directory or glob, an s3:// or gs:// "
                         "URI, or table:NAME in the DuckDB file")
    db: str = Field(default="pairwise.duckdb", min_length=1, description="DuckDB file the output tables are written to")
    gold_column: str | None = Field(
        default=None,
        description="Items column with the current (gold) label; unset: no gold metrics and no review of labels",
    )
    strategy: Literal["tourney", "round_robin"] = Field(
        default=_CORE_DEFAULTS["strategy"],
        description="tourney: K - 1 matches per item in a seeded bracket; round-robin: all K(K-1)/2 matches",
    )
    cutoff: float = Field(default=_CORE_DEFAULTS["cutoff"], ge=0,
                          description="Cross-deviation ratio a dimension must exceed to enter a pair's mask")
    min_dims: int = Field(default=_CORE_DEFAULTS["min_dims"], ge=1,
                          description="Fewest dimensions in a mask: when fewer pass the cutoff, the top ones are kept")
    max_dims: int | None = Field(default=_CORE_DEFAULTS["max_dims"], ge=1,
                                 description="Most dimensions in a mask (the top ones by ratio); unset: no limit")
    min_items: int = Field(
        default=_CORE_DEFAULTS["min_items"], ge=2,
        description="Fewest confident items on each side of a pair; fewer: the pair falls back to all dimensions",
    )
    pair_margin: float = Field(
        default=_CORE_DEFAULTS["pair_margin"], ge=0,
        description="An item counts for pair (a, b) only when its cosines for a and b differ by at least this",
    )
    score_floor: float | None = Field(
        default=_CORE_DEFAULTS["score_floor"], ge=-1, le=1,
        description="Items whose top cosine is below it count for no pair's statistics; unset: no floor",
    )
    candidates: int | None = Field(
        default=_CORE_DEFAULTS["candidates"], ge=2,
        description="Many classes: only each item's top-m classes by base score play; unset: every class up to "
        f"{PRUNE_ABOVE} classes, the top {DEFAULT_CANDIDATES} beyond (a value of at least K plays every class)",
    )
    seed: int = Field(default=_CORE_DEFAULTS["seed"], ge=0, le=MAX_SEED,
                      description="Seeds the tourney bracket, the fit share and the refinement's sample")
    chunk_size: int = Field(default=50_000, ge=1, description="Rows per partition (whole row groups), the unit of work")
    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN,
                               description="Name of the run (letters, digits, . _ -); unset: a time-stamped one")
    model: str | None = Field(
        default=None, pattern=RUN_ID_PATTERN,
        description="Label with a stored model ('latest' or a model id: `pairwise models` lists them), no fit: one "
        "pass over the catalog; unset: a full run, which fits a model and stores it")
    incremental: bool = Field(
        default=False, description="With --model: label only the items that are new or changed since the model last "
        "labelled them (new and deleted ones found from item_id alone), and carry every other label over")
    changed_column: str | None = Field(
        default=None, description="Items column whose value changes whenever an item's embeddings do (a version, "
        "updated_at): incremental nights compare it instead of hashing every item's embeddings; unset: hash them")
    refit_on_drift: bool = Field(
        default=False, description="With --incremental: when the night's items drifted from the model's fit "
        "sample (drift_metrics), refit a model on the whole catalog that same night")
    refit_stability: float = Field(
        default=0.7, ge=0, le=1, description="On a refit, an item whose embeddings did not change keeps its label "
        "unless the new model gives another label at least this confidence (0.7 cut that churn to zero on two real "
        "catalogs, accuracy within 0.1 point: docs/results.md); 0: always take the new label")
    graph_k: int | None = Field(
        default=None, ge=0, le=100, description="The graph refinement's neighbours: each item's refined and joint "
        "posteriors are propagated over the catalog's k-nearest-neighbour graph (k = 20 chosen on the WordNet "
        "catalogs: +2 points joint accuracy on the nouns, -0.4 on the verbs, docs/results.md); with a gold column "
        "the review also weighs in the neighbours' given labels; 0: off, 100 at most. With --model, the model must "
        "have been fitted with it. Unset: off for a full run; with --model, the model's own (the k it was fitted "
        "with, off if without), so a night follows the weekly fit")
    graph_reference: int = Field(
        default=REFERENCE_ITEMS, ge=2, description="With --graph-k: the graph is built over at most this many items, "
        "a seeded sample; every other item takes one step against its k nearest of them, as a night's new items "
        "do. Bounds the graph's time and memory and the stored model (docs/results.md)")
    keep_models: int | None = Field(
        default=None, ge=1, description="After the run commits, remove the stored models (row and files) but the "
        "newest N; one that still labels live items stays (`pairwise models --keep N` does the same by hand); "
        "unset: keep every model")
    keep_runs: int | None = Field(
        default=None, ge=1, description="After the run commits, remove every run older than the newest N succeeded "
        "ones, all its rows and its HTML report; one that still labels live items or fitted a stored model stays "
        "(`pairwise runs --keep N` does the same by hand); unset: keep every run")
    export_dir: str | None = Field(
        default=None, description="Also write the run's tables as Parquet here; unset: only to the DuckDB file")
    fit_fraction: float = Field(
        default=1.0, gt=0, le=1,
        description="Fit the masks on this seeded share of the partitions (1: all). Only for catalogs whose "
        "files are not sorted by class: a share of sorted row groups misses whole classes",
    )
    dask_address: str | None = Field(
        default=None,
        description="Run the partition tasks on this Dask scheduler (tcp://host:8786); a deployment's run may use "
        f"only one that {DASK_ALLOWED} lists, the command line any; unset: on local threads",
    )

    @field_validator("run_id", "model", mode="before")
    @classmethod
    def _an_id(cls, name: Any) -> Any:
        """A run or model id that the pattern refuses, said in words: pydantic's own message was the pattern's
        regular expression. The pattern stays, for the Prefect UI's form."""
        if isinstance(name, str) and not re.fullmatch(RUN_ID_PATTERN, name):
            raise ValueError(f"{name!r}: letters, digits, '.', '_' and '-' only, starting with a letter or digit, "
                             "at most 128 characters")
        return name

    @field_validator("dask_address")
    @classmethod
    def _dask_allowed(cls, address: str | None, info: ValidationInfo) -> str | None:
        """The flow's Dask client unpickles what the scheduler sends back: a scheduler is code it runs, so
        only one the flow's environment lists, or the address of `pairwise run`'s own command line (the
        CLI passes it as the validation context ``TRUSTED_DASK``); never one a deployment's parameters
        alone name (docs/operations.md, the trust boundary)."""
        if address is None:
            return address
        if address in allowed_dask_addresses() or address == (info.context or {}).get(TRUSTED_DASK):
            return dask_address_form(address)
        raise ValueError(f"{address} is not an allowed Dask scheduler: list it in {DASK_ALLOWED} (comma-separated) "
                         "in the environment of the flow's process")

    @model_validator(mode="after")
    def _dims_in_order(self) -> ReclassifyParams:
        # checked here too, so that a bad pair is refused before a run starts, not inside its first task
        if self.max_dims is not None and self.max_dims < self.min_dims:
            raise ValueError(f"max_dims ({self.max_dims}) must be >= min_dims ({self.min_dims})")
        if self.incremental and self.model is None:
            raise ValueError("--incremental labels with a stored model: add --model latest (or a model id)")
        if self.refit_on_drift and not self.incremental:
            raise ValueError("--refit-on-drift checks an incremental night's drift: add --incremental")
        if self.calibration == "gold" and self.gold_column is None:
            raise ValueError("calibration 'gold' needs a gold column (--gold-column)")
        if self.review != "auto" and self.gold_column is None:
            raise ValueError(f"--review {self.review} reviews the given labels: add --gold-column")
        return self

    refine_iterations: int = Field(default=_REFINE_DEFAULTS["n_iter"], ge=1,
                                   description="EM iterations of the refinement (METHOD.md step 8, kept outside "
                                   "this repository: docs/design.md)")
    refine_temperature: float = Field(
        default=_REFINE_DEFAULTS["temperature"], **_refine_bounds("temperature"),
        description="Refinement temperature, relative to the mixture's variance; at least 1e-4")
    refine_anchor: float = Field(default=_REFINE_DEFAULTS["anchor_weight"], **_refine_bounds("anchor_weight"),
                                 description="Weight of the zero-shot anchor in the refinement's E-step, in [0, 100]")
    refine_eps: float = Field(
        default=_REFINE_DEFAULTS["eps"], **_refine_bounds("eps"),
        description="Share of the anchor given to the cosine softmax, not the pairwise label, in (0, 1]")
    refine_tau: float = Field(default=_REFINE_DEFAULTS["tau"], **_refine_bounds("tau"),
                              description="Sharpness of the anchor's cosine softmax, in [0, 1000]")
    refine_sample: int = Field(default=20_000, ge=100,
                               description="Rows of the seeded sample that carries the refinement's EM iterations")
    calibration: Literal["auto", "gold", "label-free"] = Field(
        default="auto", description="Fit the confidence weights out of fold on the gold column ('gold'), or not "
        "('label-free'); 'auto': gold when a gold column is given")
    review: Literal["auto", "zero-shot", "label-aware", "both"] = Field(
        default="auto", description="With a gold column, the evidence annotation_issues ranks by: the refined "
        "joint posterior, which never reads the labels ('zero-shot'), an out-of-fold discriminant on the given "
        "labels ('label-aware'), or both combined; 'auto': both")
    issues_below: float = Field(
        default=0.5, gt=0, le=1, description="annotation_issues keeps the labelled items whose p_given is below "
        "this (0.5: the label is more likely wrong than right); 1: every labelled item, ranked")

    def for_workers(self) -> ReclassifyParams:
        """With a Dask scheduler, the local paths the workers read or write (items, classes, and the DuckDB
        file, whose staging folder they exchange files through) made absolute against this process's working
        folder: a worker started in another folder read them against its own (a deployment's relative paths
        are the pull step's folder's). URIs and ``table:NAME`` stay as they are; on local threads, nothing
        changes."""
        from tasks.sources import absolute

        if self.dask_address is None:
            return self
        return self.model_copy(update={name: absolute(getattr(self, name)) for name in ("items", "classes", "db")})

    def label_aware(self) -> bool:
        """Whether the confidence is to be fitted on the gold labels (``--calibration``), if there are enough."""
        return self.calibration == "gold" or (self.calibration == "auto" and self.gold_column is not None)

    def refine_params(self) -> dict[str, Any]:
        return {"n_iter": self.refine_iterations, "temperature": self.refine_temperature,
                "anchor_weight": self.refine_anchor, "eps": self.refine_eps, "tau": self.refine_tau}

    def core_params(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CORE_DEFAULTS}


class DemoParams(BaseModel):
    """`pairwise demo`'s options, and the defaults of the pairwise-demo flow."""

    db: str = Field(default="pairwise-demo.duckdb", min_length=1,
                    description="DuckDB file the demo catalog and its run go to")
    n_items: int = Field(default=20_000, ge=1, description="Items in the synthetic catalog")
    n_classes: int = Field(default=13, ge=2, description="Classes in the synthetic catalog")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="Seeds the synthetic catalog and the run")
    strategy: Literal["tourney", "round_robin"] = Field(
        default=ReclassifyParams.model_fields["strategy"].default,
        description=ReclassifyParams.model_fields["strategy"].description,
    )
