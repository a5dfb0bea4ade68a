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
