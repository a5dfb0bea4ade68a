"""Write the synthetic demo catalog into the embedded DuckDB file."""

from __future__ import annotations

from pathlib import Path

import duckdb
from prefect import task

from pairwise_core import make_catalog
from tasks.policy import IO_TASK

DEMO_ITEMS = "demo_items"
DEMO_CLASSES = "demo_classes"


@task(name="write-demo-catalog", **IO_TASK)
def write_demo_catalog(db: str, n_items: int, n_classes: int, seed: int) -> tuple[str, str]:
    """Generate the catalog (pairwise_core.make_catalog) and (re)create its two tables; return their sources."""
    items, classes = make_catalog(n_items, n_classes, seed=seed)
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(db) as con:
        con.register("new_items", items)
        con.register("new_classes", classes)
        con.execute(f"CREATE OR REPLACE TABLE {DEMO_ITEMS} AS SELECT * FROM new_items")
        con.execute(f"CREATE OR REPLACE TABLE {DEMO_CLASSES} AS SELECT * FROM new_classes")
    return f"table:{DEMO_ITEMS}", f"table:{DEMO_CLASSES}"
