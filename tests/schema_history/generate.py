"""Write tests/schema_history/NN_<commit>.sql: the statements each released schema ran on a fresh file.

Run from the repository root, once per new release of the schema (add it to RELEASES): the fixtures
are copies of history, so that the upgrade tests need no git history (a shallow clone, an sdist).
Before schema versions, a write connection ran tasks/sql.py's SCHEMA, sql/create_*.sql in that order;
since, it applies sql/migrations/ with a row in schema_migrations each, then re-creates the views.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path


def show(commit: str, path: str) -> str:
    return subprocess.run(["git", "show", f"{commit}:{path}"], capture_output=True, text=True, check=True).stdout


def statement(commit: str, path: str) -> str:
    return show(commit, path).strip().rstrip(";") + ";"


def before_versions(commit: str) -> list[str]:
    """The SCHEMA of that commit's tasks/sql.py, a tuple of file names built from OUTPUT_TABLES."""
    source = show(commit, "tasks/sql.py")
    tables = eval(re.search(r"OUTPUT_TABLES = (\(.*?\))\n", source, re.DOTALL)[1])
    schema = eval(re.search(r"SCHEMA = (\(.*?\))\n", source, re.DOTALL)[1], {"OUTPUT_TABLES": tables})
    return [statement(commit, f"sql/{name}.sql") for name in schema]


def versioned(commit: str) -> list[str]:
    """That commit's migrations, each with its record, then its views."""
    listed = subprocess.run(["git", "ls-tree", "--name-only", commit, "sql/migrations/"], capture_output=True,
                            text=True, check=True).stdout.split()
    statements = []
    for path in sorted(listed):
        match = re.fullmatch(r"sql/migrations/(\d{3})_(\w+)\.sql", path)
        statements.append(show(commit, path).strip())
        statements.append(f"INSERT INTO schema_migrations VALUES ({int(match[1])}, '{match[2]}', "
                          "'2026-12-01 00:00:00+00');")
    return statements + [statement(commit, f"sql/{view}.sql")
                         for view in ("create_current_labels", "create_consensus_labels")]


# every commit that changed the tables (`git log -- 'sql/create_*' sql/migrations`), oldest first;
# df12857 changed a comment of 2cdb3ef's annotation_issues only
RELEASES: list[tuple[str, Callable[[str], list[str]], str]] = [
    ("f73b58e", before_versions, "the first pipeline"),
    ("1a9b016", before_versions, "annotation_issues (without raw_score) and consensus_labels"),
    ("d18059e", before_versions, "item_labels.given_gap and given_h2h"),
    ("2cdb3ef", before_versions, "annotation_issues.raw_score (and df12857, a comment changed)"),
    ("b2d6423", before_versions, "confusion_counts"),
    ("b8e340a", versioned, "schema versions 1-2: run_attempts"),
    ("1a9ae3c", versioned, "schema version 3: refined and joint labels"),
    ("1259f22", versioned, "schema version 4: review routes"),
]


def main() -> None:
    for number, (commit, build, what) in enumerate(RELEASES, 1):
        dated = subprocess.run(["git", "log", "-1", "--format=%h of %ad", "--date=short", commit],
                               capture_output=True, text=True, check=True).stdout.strip()
        header = (f"-- The schema as the code of commit {dated} left a fresh file: {what}.\n"
                  "-- Written by tests/schema_history/generate.py from git; never edit: it is history.\n\n")
        path = Path(__file__).with_name(f"{number:02d}_{commit}.sql")
        path.write_text(header + "\n\n".join(build(commit)) + "\n")


if __name__ == "__main__":
    main()
