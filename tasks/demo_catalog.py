"""Write the synthetic demo catalog into the embedded DuckDB file."""

from __future__ import annotations

from pathlib import Path

import duckdb
from prefect import task

from pairwise_core import make_catalog
from tasks.policy import IO_TASK
from tasks.store import DUCKDB_FILE

DEMO_ITEMS = "demo_items"
DEMO_CLASSES = "demo_classes"


def check_demo_db(db: str) -> None:
    """ValueError (bad input, one line) if ``db`` holds runs of a catalog other than the demo's: the demo's full
    run would label its synthetic items there and mark every item of that catalog deleted in catalog_labels (a
    production file given to `pairwise demo --db` lost its labels so)."""
    from tasks.store import query_ours

    other = query_ours(db, "runs_of_other_sources", {"items": f"table:{DEMO_ITEMS}"})
    if other is not None and other.num_rows:
        run_id, items = other.column("run_id")[0].as_py(), other.column("items")[0].as_py()
        raise ValueError(f"--db {db}: holds runs of another catalog (run {run_id}, items {items or 'unrecorded'}): "
                         "the demo would mark its items deleted; give the demo a file of its own")


@task(name="write-demo-catalog", **IO_TASK)
def write_demo_catalog(db: str, n_items: int, n_classes: int, seed: int) -> tuple[str, str]:
    """Generate the catalog (pairwise_core.make_catalog) and (re)create its two tables; return their sources."""
    items, classes = make_catalog(n_items, n_classes, seed=seed)
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(db, config=DUCKDB_FILE) as con:
        con.register("new_items", items)
        con.register("new_classes", classes)
        con.execute(f"CREATE OR REPLACE TABLE {DEMO_ITEMS} AS SELECT * FROM new_items")
        con.execute(f"CREATE OR REPLACE TABLE {DEMO_CLASSES} AS SELECT * FROM new_classes")
    return f"table:{DEMO_ITEMS}", f"table:{DEMO_CLASSES}"
