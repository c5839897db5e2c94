"""The design the code cites is in the repository: every section of docs/design.md the
code, tests, scripts and docs name is a section of that page, every ``docs/*.md`` they name
exists, and nothing cites the team's DESIGN.md, which a clone does not have."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
CITATION = re.compile(r'docs/design\.md,?\s+"([^"]+)"')


def cited_files() -> list[Path]:
    folders = [ROOT / "pipeline", ROOT / "tests", ROOT / "scripts", ROOT / "docs"]
    return [p for folder in folders for p in folder.rglob("*") if p.suffix in (".py", ".md", ".toml")] + [ROOT / "README.md"]


def sections() -> set[str]:
    return {line[3:].strip() for line in (ROOT / "docs" / "design.md").read_text().splitlines() if line.startswith("## ")}


def test_every_cited_section_of_the_design_exists():
    known = sections()
    cited = {
        (path.relative_to(ROOT).as_posix(), section)
        for path in cited_files()
        for section in CITATION.findall(" ".join(path.read_text().split()))
    }
    assert cited, "the code cites docs/design.md"
    assert [c for c in sorted(cited) if c[1] not in known] == []


def test_nothing_cites_a_document_outside_the_repository():
    this = Path(__file__).resolve()
    for path in cited_files():
        if path.resolve() == this:
            continue
        text = path.read_text()
        assert "DESIGN.md" not in text and 'DESIGN "' not in text, path
        for name in re.findall(r"\bdocs/([\w.-]+\.md)\b", text):
            assert (ROOT / "docs" / name).exists(), f"{path} cites docs/{name}"
