"""The statements of sql/ by file name, and the migrations of sql/migrations/: SQL lives there, not in Python."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

OUTPUT_TABLES = (
    "item_labels", "joint_labels", "pair_masks", "agreement_metrics", "rejected_items", "annotation_issues",
    "confusion_counts", "calibration_bins", "drift_metrics",
)
# views carry no data: every write connection re-creates them, after the migrations
VIEWS = ("create_current_labels", "create_consensus_labels", "create_catalog_labels")
# every table and view of our schema (a test checks it against a migrated file): no user table may take a name
OWN_NAMES = frozenset({
    *OUTPUT_TABLES, "runs", "run_attempts", "schema_migrations", "models", "catalog_items", "catalog_files",
    "label_changes", *(view.removeprefix("create_") for view in VIEWS),
})


@cache
def statement(name: str) -> str:
    """The text of sql/<name>.sql."""
    return files("sql").joinpath(f"{name}.sql").read_text()


@dataclass(frozen=True)
class Migration:
    """sql/migrations/NNN_name.sql: the statements that bring a file from schema version NNN - 1 to NNN."""

    version: int
    name: str
    text: str


def _load_migrations() -> tuple[Migration, ...]:
    """Every migration in order; their numbers must run 1, 2, 3... (a gap would skip a step on every file)."""
    found = sorted(
        (Migration(int(match[1]), match[2], entry.read_text())
         for entry in files("sql").joinpath("migrations").iterdir()
         if (match := re.fullmatch(r"(\d{3})_(\w+)\.sql", entry.name))),
        key=lambda migration: migration.version,
    )
    versions = [migration.version for migration in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"sql/migrations: versions {versions} do not run 1, 2, 3... without a gap")
    return tuple(found)


MIGRATIONS = _load_migrations()
