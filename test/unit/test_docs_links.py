"""The README and docs/ hold together: every relative link and anchor resolves, and the README stays short.

A page moved or a heading renamed otherwise leaves links that lead nowhere, which
a reader finds only by clicking. Anchors follow GitHub's rule: the heading in lower
case, punctuation other than `-` and `_` dropped, spaces as `-`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)|<img [^>]*src=\"([^\"]+)\"")


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(path: Path) -> list[str]:
    """The lines outside fenced code blocks (a `#` comment in a shell block is no heading)."""
    lines, fenced = [], False
    for line in path.read_text().split("\n"):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    return lines


def _anchors(path: Path) -> set[str]:
    return {_slug(m.group(1)) for line in _prose(path) if (m := re.match(r"^#{1,6} (.*)", line))}


def _links(path: Path) -> list[str]:
    return [m.group(1) or m.group(2) for line in _prose(path) for m in LINK.finditer(line)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_and_anchor_resolves(page: Path) -> None:
    broken = []
    for link in _links(page):
        if re.match(r"^[a-z]+:", link):  # http:, https:, mailto:
            continue
        target, _, anchor = link.partition("#")
        file = (page.parent / target).resolve() if target else page
        if not file.exists():
            broken.append(f"{link}: no file {file.relative_to(ROOT) if file.is_relative_to(ROOT) else file}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{link}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_the_readme_is_read_in_ten_minutes_and_maps_every_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    linked = {Path(link.partition("#")[0]).name for link in _links(ROOT / "README.md") if link.startswith("docs/")}
    missing = sorted(p.name for p in PAGES[1:] if p.name not in linked)
    assert not missing, f"docs pages the README's map does not link: {missing}"
