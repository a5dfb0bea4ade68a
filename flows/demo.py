"""The demo: a synthetic catalog in an embedded DuckDB file, through the same nightly flow."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from flows.reclassify import ReclassifyParams, reclassify_catalog
from tasks.demo_catalog import write_demo_catalog

DEFAULT_DB = "pairwise-demo.duckdb"


@flow(name="pairwise-demo")
def demo(
    db: str = DEFAULT_DB,
    n_items: int = 20_000,
    n_classes: int = 13,
    seed: int = 0,
    strategy: Literal["tourney", "round_robin"] = "tourney",
) -> dict[str, Any]:
    """Generate the catalog (seeded), then reclassify it with its gold labels."""
    items, classes = write_demo_catalog(db, n_items, n_classes, seed)
    params = ReclassifyParams(
        items=items, classes=classes, db=db, gold_column="label", seed=seed, strategy=strategy
    )
    return reclassify_catalog(params)
