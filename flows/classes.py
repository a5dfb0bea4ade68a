"""`pairwise classes`: class names and prompt templates in, a classes table for `pairwise run` out.

Not a Prefect flow: it is one short step a user runs once per catalog, with
nothing to retry, schedule or watch, and it should not pay Prefect's start-up.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from tasks.class_prompts import check_destination, class_table, parse_options, read_names, write_duckdb, write_parquet
from tasks.encoders import load_encoder


def build_classes(
    names_file: str,
    templates: Sequence[str],
    encoders: Sequence[str],
    *,
    modalities: Sequence[str] = (),
    out: str | None = None,
    db: str | None = None,
    table: str = "classes",
) -> pa.Table:
    """Check every option, then load each encoder once, embed, and write the table to `out` or `db`."""
    names, parents = read_names(names_file)
    forms, specs = parse_options(templates, encoders, modalities)
    if db is not None:
        check_destination(db, table)
    loaded = {spec: load_encoder(spec) for spec in dict.fromkeys(specs.values())}
    result = class_table(names, forms, {m: (spec, loaded[spec]) for m, spec in specs.items()}, parents)
    if out is not None:
        write_parquet(result, out)
    elif db is not None:
        write_duckdb(result, db, table)
    return result
