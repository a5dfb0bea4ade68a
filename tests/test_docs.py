"""The README and docs/ point only at what the repository holds: every relative link resolves to a file in
it (and to a heading there, when it names one), and so does every path to a Markdown file in a code span."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_PATH = re.compile(r"`([^`\s]+\.md(?:#[^`\s]*)?)`")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)  # https:, mailto:, file:...


def anchors(path: Path) -> set[str]:
    """The headings' anchors as GitHub makes them: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*$", FENCE.sub("", path.read_text()), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def references(document: Path) -> list[str]:
    text = FENCE.sub("", document.read_text())
    return [target for pattern in (LINK, CODE_PATH) for target in pattern.findall(text)
            if not EXTERNAL.match(target)]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_and_heading_in_the_repository(document):
    broken = []
    for target in references(document):
        path_part, _, anchor = target.partition("#")
        path = (document.parent / path_part).resolve() if path_part else document
        if not path.is_relative_to(ROOT) or not path.exists():
            broken.append(f"{target}: no such file in the repository")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(ROOT)}")
    assert not broken, broken


def test_the_link_check_finds_links_and_code_paths(tmp_path):
    """The check itself: a link and a path in a code span are found, a fenced block and a URL are not."""
    document = tmp_path / "doc.md"
    document.write_text("# A title, here\n[x](docs/a.md#b) `../../shared/SPEC.md` [u](https://example.com)\n"
                        "```sh\n[y](not/a/link.md)\n# not a heading\n```\n")
    assert references(document) == ["docs/a.md#b", "../../shared/SPEC.md"]
    assert anchors(document) == {"a-title-here"}


COMMAND = re.compile(r"\bpairwise ((?:run|demo|report|models|classes|worker)\b[^`\n]*)")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z-]*")


def commands_shown(text: str) -> list[tuple[str, str]]:
    """Every `pairwise SUBCOMMAND ...` the text shows, in a fenced block (a line, with its continuations) or a
    code span, as (subcommand, the rest up to a comment)."""
    blocks = [block.group(0).replace("\\\n", " ") for block in FENCE.finditer(text)]
    lines = [line for block in blocks for line in block.splitlines()] + re.findall(r"`([^`]+)`", FENCE.sub("", text))
    return [(found.group(1).split()[0], found.group(1).split(" #")[0]) for line in lines
            for found in COMMAND.finditer(line)]


def subcommand_options() -> dict[str, set[str]]:
    import argparse

    from flows.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: {option for action in parser._actions for option in action.option_strings if option.startswith("--")}
            for name, parser in commands.items()}


def test_every_option_a_documented_command_shows_is_one_of_that_command():
    options = subcommand_options()
    unknown = [f"{document.relative_to(ROOT)}: pairwise {command}: {option}"
               for document in DOCUMENTS for command, rest in commands_shown(document.read_text())
               for option in OPTION.findall(rest) if option not in options[command]]
    assert not unknown, unknown


def test_every_option_of_every_command_is_named_in_the_readme_or_docs():
    """`--help` lists them; the documents name each at least once, so that none is only there (the negative
    `--no-` forms of a flag excepted)."""
    named = set(OPTION.findall("\n".join(document.read_text() for document in DOCUMENTS)))
    unnamed = sorted(f"pairwise {command} {option}" for command, found in subcommand_options().items()
                     for option in found if option not in named and not option.startswith("--no-"))
    assert not unnamed, unnamed


def test_the_command_check_finds_commands_and_their_options():
    text = ("Run `.venv/bin/pairwise models --db PATH --keep 4`, or:\n```sh\n.venv/bin/pairwise run --items x \\\n"
            "    --db y   # then --nothing\npairwise report --db y\n```\n")
    assert commands_shown(text) == [("run", "run --items x      --db y  "), ("report", "report --db y"),
                                    ("models", "models --db PATH --keep 4")]
    assert OPTION.findall("run --items x --gold-column label [--dry-run] a--b") == [
        "--items", "--gold-column", "--dry-run"]


TABLE_ROW = re.compile(r"^\| (?:view )?`(\w+)` \| ([^|]*) \| (.*) \|$", re.MULTILINE)
KEYS = {"run_id": "run", "item_id": "item"}  # named by the row's "one row per" (run × item × ...)


def documented_columns(text: str) -> dict[str, set[str]]:
    """Per table row of tables.md: the names in code spans of its notes, with those of the rows it names (the
    view `consensus_labels` gives joint_labels its columns), and its keys when its "one row per" names them."""
    own = {name: set(re.findall(r"`(\w+)`", notes)) | {key for key, word in KEYS.items() if word in per}
           for name, per, notes in TABLE_ROW.findall(text)}
    return {name: names.union(*(own[other] for other in names if other in own)) for name, names in own.items()}


def test_every_column_of_every_table_and_view_is_named_in_its_row_of_tables_md(tmp_path):
    """An analyst reads the columns' names in docs/tables.md: runs' started_at and n_items, item_labels'
    base_score and calibration_bins' confidence (a sum, not a mean) were nowhere there."""
    import duckdb

    from tasks import store

    with store.connect(tmp_path / "fresh.duckdb"):
        pass
    with duckdb.connect(str(tmp_path / "fresh.duckdb"), read_only=True) as con:
        columns = con.execute("SELECT table_name, list(column_name) FROM information_schema.columns "
                              "WHERE table_schema = 'main' GROUP BY table_name").fetchall()
    documented = documented_columns((ROOT / "docs" / "tables.md").read_text())
    missing = sorted(f"{table}.{column}" for table, names in columns
                     for column in names if column not in documented.get(table, ()))
    assert not missing, missing


def test_every_dependency_is_named_in_the_readme_and_in_design_md():
    """The contract: dependencies beyond prefect, numpy, polars, duckdb and pyarrow are said, with why, in the
    README. scipy, faiss-cpu, threadpoolctl and rich were declared in pyproject.toml and named nowhere."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = [re.match(r"[A-Za-z0-9_.-]+", requirement).group(0) for requirement in declared]
    sections = [path.read_text().partition("\n## Dependencies\n")[2].split("\n## ", 1)[0]
                for path in (ROOT / "README.md", ROOT / "docs" / "design.md")]
    missing = [name for name in names if not all(name in section for section in sections)]
    assert not missing, f"declared in pyproject.toml but not named in the README and docs/design.md: {missing}"


@pytest.mark.parametrize("beside", [".duckdb", ".duckdb.wal", ".duckdb.lock", ".duckdb.staging/r/x.npy",
                                    ".duckdb.reports/r.html", ".duckdb.models/m/manifest.json"])
def test_what_the_readmes_demo_writes_in_the_project_folder_is_ignored_by_git(beside):
    """`pairwise demo` (README) writes pairwise-demo.duckdb and its folders in the project folder: `git status`
    listed its model store as untracked (`git add -A` took its arrays: 12 MB for a 3,000-item demo)."""
    import subprocess

    ignored = subprocess.run(["git", "check-ignore", "-q", f"pairwise-demo{beside}"], cwd=ROOT)
    assert ignored.returncode == 0
