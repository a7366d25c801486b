"""The documentation's shape: a README a newcomer reads in an hour, every docs page with a table of
contents, and no relative link (file or anchor) that leads nowhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS, ROOT / "bench" / "README.md"]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def outside_code(text: str) -> str:
    """The text without fenced blocks and inline code spans, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found: set[str] = set()
    for line in re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M).splitlines():
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            found.add(re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-"))
    return found


def test_the_readme_is_at_most_300_lines() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_there_are_docs_pages_and_an_index_naming_each() -> None:
    names = {page.name for page in DOCS}
    assert {"README.md", "rules.md", "langsmith.md", "operations.md", "production.md", "guarantees.md",
            "configuration.md", "development.md"} <= names
    index = (ROOT / "docs" / "README.md").read_text()
    assert {name for name in names if name != "README.md"} <= set(re.findall(r"\]\(([\w-]+\.md)\)", index))


def test_every_docs_page_has_a_table_of_contents_linking_its_sections() -> None:
    for page in DOCS:
        text = page.read_text()
        assert "\n## Contents\n" in text, f"{page.name} has no table of contents"
        if page.name == "README.md":
            continue  # the index: its contents are the pages (checked above), not its own sections
        contents = text.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
        listed = set(re.findall(r"\]\(#([^)]+)\)", contents))
        assert listed, f"{page.name}: its table of contents lists nothing"
        level_two = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^## (.*)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M)}
        assert level_two - {"contents"} <= listed, f"{page.name}: sections missing from its contents"


def test_every_relative_link_points_to_an_existing_file_and_anchor() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(outside_code(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not ours to check offline
            file_part, _, anchor = target.partition("#")
            destination = (page.parent / file_part).resolve() if file_part else page
            if not destination.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_quickstart_commands_are_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[dev]' -e ./standin && .venv/bin/lswh dev" in readme
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' -e ./standin && .venv/bin/pytest" in readme


def test_ci_installs_what_the_readmes_test_command_installs() -> None:
    """CI runs the README's test command: the same packages, the stand-in included (`-q` aside)."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' -e ./standin\n" in ci


def cited_files() -> list[Path]:
    """Product code, tests and deploy files: where a comment may cite a document."""
    roots = ["ingress", "workers", "lswh_core", "lswh", "standin", "tests", "deploy", "bench", "scripts", ".ci"]
    files = [p for r in roots for p in (ROOT / r).rglob("*") if p.is_file() and p.suffix != ".md"]
    files += [ROOT / name for name in ("docker-compose.yml", "Dockerfile", ".env.example", "pyproject.toml")]
    return [p for p in files if ".build" not in p.parts and "__pycache__" not in p.parts
            and p.name not in {"openloop.c", "test_docs.py"}]


def test_no_comment_cites_a_document_outside_the_repository() -> None:
    """A "SPEC" lived outside the repository; README sections moved to docs/. What code cites must
    be a docs page that exists."""
    readme = (ROOT / "README.md").read_text()
    stale, missing = [], []
    for path in cited_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        where = path.relative_to(ROOT)
        if re.search(r"\bSPEC\b", text):
            stale.append(f"{where}: cites SPEC")
        for section in re.findall(r"README[,:]? \"([^\"]+)\"", text):
            if f"\n## {section}\n" not in readme:
                stale.append(f"{where}: cites README section {section!r}, which is not there")
        missing += [f"{where}: {doc}" for doc in re.findall(r"\bdocs/[\w-]+\.md", text) if not (ROOT / doc).exists()]
    assert stale == [] and missing == []
