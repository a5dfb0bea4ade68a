"""Gold accuracy per number of candidates, on two held-out halves of each catalog's items.

    PYTHONPATH=. python bench/bench_candidates_halves.py bench/data/taxonomy-nouns bench/data/taxonomy-nouns-d8 \
        [--candidates 8 16 32 exact]

Checks the run's pruning default (``DEFAULT_CANDIDATES`` above ``PRUNE_ABOVE`` classes) the way it was not
chosen: per catalog and number of candidates m, one whole-catalog `pairwise run --gold-column label
--candidates m` (``exact`` = K, every class plays); its labels are then scored separately on two halves of
the items (``np.random.default_rng(0).random(n) < 0.5`` over the items in file order). A difference between
two m that is real shows on both halves with the same sign. Leaf accuracy of the pairwise and refined labels
(mean over the views) and of the joint label; parent accuracy of the same (the pairwise label's parent; the
refined and joint posteriors' summed parent), the gold parent being the gold class's parent.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from bench_classes_scale import run

COLUMNS = ("pairwise", "refined", "joint", "pairwise parent", "refined parent", "joint parent")


def scores(db: Path, items: pa.Table, parents: pa.Table) -> dict[int, dict[str, float]]:
    """Per half (0, 1): accuracy of each label in COLUMNS against the gold column."""
    half = np.random.default_rng(0).random(items.num_rows) < 0.5
    gold = pa.table({"item_id": items.column("item_id"), "gold": items.column("label"),
                     "half": pa.array(half.astype(np.int8))})
    with duckdb.connect(str(db), read_only=True) as con:
        con.register("gold_items", gold)
        con.register("parents", parents)
        rows = con.execute("""
            WITH per_view AS (
                SELECT g.half, l.modality,
                       avg((l.pairwise_class = g.gold)::INT) AS pairwise,
                       avg((l.refined_class = g.gold)::INT) AS refined,
                       avg((pp.parent = gp.parent)::INT) AS pairwise_parent,
                       avg((l.parent_class = gp.parent)::INT) AS refined_parent
                FROM item_labels l JOIN gold_items g USING (item_id)
                JOIN parents gp ON gp.class_name = g.gold
                JOIN parents pp ON pp.class_name = l.pairwise_class
                GROUP BY ALL),
            joint AS (
                SELECT g.half, avg((j.label = g.gold)::INT) AS joint,
                       avg((j.parent_label = gp.parent)::INT) AS joint_parent
                FROM joint_labels j JOIN gold_items g USING (item_id) JOIN parents gp ON gp.class_name = g.gold
                GROUP BY ALL)
            SELECT half, avg(pairwise), avg(refined), any_value(joint), avg(pairwise_parent), avg(refined_parent),
                   any_value(joint_parent), count(*)
            FROM per_view JOIN joint USING (half) GROUP BY half ORDER BY half""").fetchall()
    return {row[0]: dict(zip(COLUMNS, row[1:7], strict=True)) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", type=Path)
    parser.add_argument("--candidates", nargs="+", default=["8", "16", "32", "exact"])
    args = parser.parse_args()
    print("| catalog | K | candidates | half (items) | " + " | ".join(f"{c} acc" for c in COLUMNS) + " |")
    print("|" + "---|" * (4 + len(COLUMNS)))
    with tempfile.TemporaryDirectory() as scratch:
        for data in args.data:
            items = pq.read_table(data / "items.parquet", columns=["item_id", "label"])
            classes = pq.read_table(data / "classes.parquet", columns=["class_name", "parent"])
            half_sizes = np.bincount((np.random.default_rng(0).random(items.num_rows) < 0.5).astype(int))
            for m in args.candidates:
                count = str(classes.num_rows) if m == "exact" else m
                db = Path(scratch) / f"{data.name}-{m}.duckdb"
                run(str(data / "items.parquet"), str(data / "classes.parquet"), db, ["--candidates", count])
                for half, acc in scores(db, items, classes).items():
                    print(f"| {data.name} | {classes.num_rows} | {m} | {half} ({half_sizes[half]:,}) | "
                          + " | ".join(f"{acc[c]:.4f}" for c in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
