"""The documentation a newcomer navigates: a README that stays a front page with the two set-up commands first,
links that lead somewhere, and reference pages whose option lists are the commands' own --help (declared once, in
the options dataclasses; `python tests/test_docs.py` rewrites the lists after an option changes)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OPTIONS = re.compile(r"(<!-- options: kdqat ([\w-]+) -->\n)(.*?)(<!-- /options -->)", re.S)


def help_text(command: str) -> str:
    """`kdqat COMMAND --help` as a 100-column terminal shows it."""
    from typer.testing import CliRunner

    from kdqat.cli import app

    done = CliRunner().invoke(app, [command, "--help"], prog_name="kdqat", terminal_width=100, max_content_width=100)
    assert done.exit_code == 0, done.output
    return done.output


def options_block(command: str) -> str:
    return f"```text\n{help_text(command).rstrip()}\n```\n"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in page.read_text().splitlines() if re.match(r"#{1,6} ", line)}


def test_the_readme_is_a_front_page_that_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    first_block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in first_block.splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2 and "kdqat train" in commands[0] and commands[1] == "python -m pytest -q"
    ci = (REPO / ".ci" / "run").read_text()
    assert "python -m pytest -q" in ci  # CI runs the README's test command


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        where = (page.parent / path).resolve() if path else page
        if not where.exists():
            broken.append(target)
        elif anchor and where.suffix == ".md" and anchor not in anchors(where):
            broken.append(target)
    assert broken == []


def test_every_command_has_a_reference_page_and_its_options_are_current():
    from kdqat.cli import app

    commands = {c.name or c.callback.__name__ for c in app.registered_commands}
    documented = {}
    for page in (REPO / "docs" / "reference").glob("*.md"):
        for _, command, block, _ in OPTIONS.findall(page.read_text()):
            documented[command] = (page, block)
    assert set(documented) == commands
    stale = [f"{page.name}: kdqat {command}" for command, (page, block) in documented.items()
             if block != options_block(command)]
    assert stale == [], "run: python tests/test_docs.py"


def write_options() -> None:
    """Rewrite every reference page's option lists from the commands' --help."""
    for page in (REPO / "docs" / "reference").glob("*.md"):
        text = OPTIONS.sub(lambda m: m.group(1) + options_block(m.group(2)) + m.group(4), page.read_text())
        page.write_text(text)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    write_options()
