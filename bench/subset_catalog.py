"""A development catalog made of some classes of another: the items labelled with them, and their class rows.

    .venv/bin/python bench/subset_catalog.py bench/data/real bench/data/real-easy \
        --classes feeling plant quantity shape food animal location time substance body

Why: the WordNet catalogs are hard for zero-shot (joint accuracy 0.30-0.49), so they cannot show whether
zero-shot evidence adds to a label-aware route on a catalog where it is strong. The easy subsets
(docs/results.md says which classes and by what rule) are such catalogs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with items.parquet and classes.parquet")
    parser.add_argument("target", type=Path, help="folder to write the subset to")
    parser.add_argument("--classes", nargs="+", required=True, help="class names to keep")
    parser.add_argument("--label-column", default="label")
    args = parser.parse_args()
    items = pq.read_table(args.source / "items.parquet")
    classes = pq.read_table(args.source / "classes.parquet")
    missing = set(args.classes) - set(classes.column("class_name").to_pylist())
    if missing:
        parser.error(f"no such classes in {args.source}: {sorted(missing)}")
    args.target.mkdir(parents=True, exist_ok=True)
    names = pa.array(args.classes)
    kept = items.filter(pc.is_in(items.column(args.label_column), value_set=names))
    pq.write_table(kept, args.target / "items.parquet")
    pq.write_table(classes.filter(pc.is_in(classes.column("class_name"), value_set=names)),
                   args.target / "classes.parquet")
    print(f"{args.target}: {kept.num_rows} items, {len(args.classes)} classes")


if __name__ == "__main__":
    main()
