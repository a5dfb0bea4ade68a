"""The demo: a synthetic catalog in an embedded DuckDB file, through the same nightly flow."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow
from prefect.context import FlowRunContext

from flows.progress import begin_phase
from flows.params import DemoParams
from flows.reclassify import ReclassifyParams, new_run_id, reclassify_catalog
from tasks.demo_catalog import write_demo_catalog

_DEFAULTS = DemoParams()


def demo_run_name() -> str:
    """The demo's flow run is named after the run it makes (decided here, as the run starts), as that run's own
    flow run is: the UI named it at random ('debonair-mackerel'), next to a reclassify-catalog run named by
    its run id."""
    return new_run_id()


@flow(name="pairwise-demo", flow_run_name=demo_run_name)
def demo(
    db: str = _DEFAULTS.db,
    n_items: int = _DEFAULTS.n_items,
    n_classes: int = _DEFAULTS.n_classes,
    seed: int = _DEFAULTS.seed,
    strategy: Literal["tourney", "round_robin"] = _DEFAULTS.strategy,
) -> dict[str, Any]:
    """Generate the catalog (seeded), then reclassify it with its gold labels."""
    begin_phase("generate the demo catalog")
    items, classes = write_demo_catalog(db, n_items, n_classes, seed)
    params = ReclassifyParams(
        items=items, classes=classes, db=db, gold_column="label", seed=seed, strategy=strategy,
        run_id=FlowRunContext.get().flow_run.name,
    )
    return reclassify_catalog(params)
