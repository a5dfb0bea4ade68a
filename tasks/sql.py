"""The statements of sql/, by file name: SQL lives there, not in Python strings."""

from __future__ import annotations

from functools import cache
from importlib.resources import files

OUTPUT_TABLES = ("item_labels", "pair_masks", "agreement_metrics", "rejected_items", "annotation_issues", "confusion_counts")
SCHEMA = (
    "create_runs", *(f"create_{table}" for table in OUTPUT_TABLES),
    "upgrade_item_labels_given_gap", "upgrade_item_labels_given_h2h",
    "create_current_labels", "create_consensus_labels",
)


@cache
def statement(name: str) -> str:
    """The text of sql/<name>.sql."""
    return files("sql").joinpath(f"{name}.sql").read_text()
