"""The docs a newcomer reads: the README stays short and names every command, every relative link
and image of the README and docs/ resolves (anchors included), and no doc cites internal issue numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
ISSUE = re.compile(r"\bissues?\s+#?\d+|#\d+\b", re.IGNORECASE)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.DOTALL)
    return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_relative_link_resolves(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists() or anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(target)
    assert not broken, f"{doc.name}: links that do not resolve: {broken}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_no_internal_issue_numbers(doc):
    found = [m.group(0) for m in ISSUE.finditer(doc.read_text())]
    assert not found, f"{doc.name} cites internal issues: {found}"


def test_readme_is_short_and_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first_block = text.split("```")[1]
    assert "make demo" in first_block and "make test" in first_block


def test_readme_cli_table_names_every_command():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = sorted(sub.choices)
    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `glth ")]
    missing = [c for c in commands if not any(f"`glth {c}" in line for line in table)]
    assert not missing, f"README's CLI table lacks: {missing}"
    assert len(commands) >= 12


def test_every_figure_is_shown_somewhere():
    shown = "\n".join(d.read_text() for d in DOCS)
    unused = [f.name for f in sorted((ROOT / "docs" / "figures").glob("*.png")) if f.name not in shown]
    assert not unused, f"figures no doc shows: {unused}"
