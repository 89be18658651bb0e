"""Every command and every option is documented: in docs/commands.md and in its own --help.

Modelled on sqlite-utils' documentation tests: the list comes from the Typer app
itself, so a new command or option without documentation fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from wa_export.cli.app import app

ROOT_DIR = Path(__file__).resolve().parents[1]
README = (ROOT_DIR / "README.md").read_text(encoding="utf-8")
# The command reference: one section `## \`wa-export <cmd> …\`` per command.
COMMANDS_DOC = (ROOT_DIR / "docs" / "commands.md").read_text(encoding="utf-8")
ROOT = typer.main.get_command(app)
COMMANDS: list[str] = sorted(ROOT.commands)  # type: ignore[attr-defined]  # a click Group


def _options(command: object) -> list[str]:
    names: list[str] = []
    for parameter in command.params:  # type: ignore[attr-defined]
        if parameter.param_type_name == "option" and not parameter.hidden:
            names.append(max(parameter.opts, key=len))  # the long form
    return names


def test_every_command_has_a_reference_section() -> None:
    documented = set(re.findall(r"^#{2,4} `wa-export ([a-z-]+)", COMMANDS_DOC, flags=re.MULTILINE))
    missing = set(COMMANDS) - documented
    assert COMMANDS and not missing, f"commands without a section in docs/commands.md: {missing}"


def test_the_readme_links_every_command_to_its_reference_section() -> None:
    # The README's Commands table: one row per command, linking its section of docs/commands.md.
    linked = set(re.findall(r"^\| \[`([a-z-]+)`\]\(docs/commands\.md#wa-export-\1\b", README, flags=re.MULTILINE))
    assert set(COMMANDS) <= linked, f"commands missing from the README's Commands table: {set(COMMANDS) - linked}"


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_is_in_the_reference_and_in_help(name: str) -> None:
    command = ROOT.commands[name]  # type: ignore[attr-defined]
    section = _reference_section(name)
    result = CliRunner().invoke(app, [name, "--help"], env={"COLUMNS": "200", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    for option in _options(command):
        if option in ("--help", "--json", "--env-file"):
            continue  # documented once for every command, checked below
        assert option in section, f"docs/commands.md section of `wa-export {name}` does not mention {option}"
        assert option in result.output, f"`wa-export {name} --help` does not show {option}"


def test_common_options_are_documented_once() -> None:
    common = _section_titled("Options every command takes")
    for option in ("--json", "--env-file", "--help"):
        assert option in common, f"docs/commands.md does not explain {option} once for every command"
        assert option in README  # the README's Commands section names them too


def _reference_section(name: str) -> str:
    return _section_titled(f"`wa-export {name}")


def _section_titled(start: str) -> str:
    """The docs/commands.md section whose heading starts with `start`, up to the next heading."""
    pattern = rf"^#{{2,4}} {re.escape(start)}(?![\w-]).*?$(.*?)(?=^#{{2,4}} |\Z)"
    match = re.search(pattern, COMMANDS_DOC, re.M | re.S)
    assert match is not None, f"no section in docs/commands.md for {start}"
    return match.group(0)


DOCS = Path(__file__).resolve().parents[1] / "docs"
# Markdown links, except inside code; GitHub's heading anchors.
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("page", ["README.md", *sorted(f"docs/{path.name}" for path in DOCS.glob("*.md"))])
def test_every_link_between_the_pages_resolves(page: str) -> None:
    path = DOCS.parent / page
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        if not linked.exists() or (anchor and anchor not in _anchors(linked)):
            broken.append(target)
    assert broken == [], f"{page}: broken links {broken}"


def test_every_setting_is_in_the_settings_reference() -> None:
    from wa_export.settings import RULES

    reference = (DOCS / "settings.md").read_text(encoding="utf-8")
    rows = set(re.findall(r"^\| `([A-Z_{}]+)`", reference, flags=re.MULTILINE))
    rows |= {
        name
        for row in re.findall(r"^\| (`[A-Z_]+`(?:, `[A-Z_]+`)+)", reference, re.M)
        for name in re.findall(r"`([A-Z_]+)`", row)
    }
    missing = [rule.variable for rule in RULES if rule.variable not in rows]
    assert missing == [], f"docs/settings.md has no row for {missing} (the README links every setting there)"
