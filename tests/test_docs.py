"""The README is the short version of the documentation site in docs/: it stays short, its
links lead to files and headings that exist, and the sections the site includes from it are
there. (The site itself is built with `mkdocs build --strict` by .ci/run, which fails on a
broken link, anchor or include.)"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} +(.+?) *$", re.MULTILINE)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
INCLUDE = re.compile(r'^--8<-- "README\.md:([a-z][-_0-9a-z]*)"$', re.MULTILINE)


def anchors(markdown: str) -> set[str]:
    """The ids GitHub (and MkDocs' toc, for these headings) give a page's headings."""
    text = FENCE.sub("", markdown)
    return {
        re.sub(r"[^\w\- ]", "", heading.replace("`", "")).strip().lower().replace(" ", "-")
        for heading in HEADING.findall(text)
    }


def test_the_readme_stays_the_short_version() -> None:
    lines = README.read_text("utf-8").splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move detail to a page of docs/"


def test_every_link_of_the_readme_leads_to_a_file_and_heading_that_exist() -> None:
    readme = README.read_text("utf-8")
    targets = LINK.findall(FENCE.sub("", readme))
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        page = ROOT / path if path else README
        assert page.is_file(), f"README.md links to {path}, which does not exist"
        if anchor:
            assert anchor in anchors(page.read_text("utf-8")), (
                f"README.md links to {target}, but {page.name} has no heading with that id"
            )


def test_the_sections_the_site_includes_from_the_readme_are_there() -> None:
    readme = README.read_text("utf-8")
    included = {
        name
        for page in (ROOT / "docs").glob("*.md")
        for name in INCLUDE.findall(page.read_text("utf-8"))
    }
    assert included
    for name in sorted(included):
        start, end = f"--8<-- [start:{name}]", f"--8<-- [end:{name}]"
        assert start in readme and end in readme, f"README.md has lost its section {name}"
        assert readme.index(start) < readme.index(end), name
