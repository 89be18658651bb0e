"""`--help` as text, the way an operator reads it in a terminal or a CI log.

Checked under a non-tty (as here) at the default and at a wide terminal width:
flags take no value and say so, no metavar like `<bool>` or `<list[str]>`,
nothing of the text swallowed as markup, and `--version` answers.
"""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest

from inprocess_cli import run_wa_export
from seeding import cli_env

COMMANDS = ["export", "cleanup", "stats", "logs", "resend", "verify", "test-email", "health", "config", "demo"]
TYPE_METAVAR = re.compile(r"<(bool|str|int|float|path|list|text|integer)[^>]*>", re.IGNORECASE)


@pytest.mark.parametrize(
    ("columns", "commands"),
    [(None, [[], *([command] for command in COMMANDS)]), ("200", [[], ["export"]])],
    ids=["default-width", "wide-terminal"],
)
def test_help_is_plain_readable_text(columns, commands, tmp_path):
    for args in commands:
        result = run_wa_export([*args, "--help"], cli_env(tmp_path, {"COLUMNS": columns}), tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        text = result.stdout
        assert text.startswith(f"Usage: wa-export {' '.join(args)}".rstrip()), text
        assert TYPE_METAVAR.search(text) is None, (args, TYPE_METAVAR.search(text))
        assert "╭" not in text and "│" not in text, args  # no boxes to copy from


def test_export_help_flags_and_metavars(tmp_path):
    text = run_wa_export(["export", "--help"], cli_env(tmp_path), tmp_path).stdout
    options = {line.split()[0].rstrip(","): line for line in text.splitlines() if line.startswith("  -")}
    for flag in ("--dry-run", "--no-email", "--json"):
        assert re.match(rf"^  {flag} {{2,}}\S", options[flag]), options[flag]  # the help text follows, no value
    assert "-w, --workspace ID " in text
    for option, metavar in (
        ("--hours", "N"),
        ("--since", "TIME"),
        ("--until", "TIME"),
        ("--email", "ADDRESS"),
        ("--workers", "N"),
        ("--env-file", "PATH"),
    ):
        assert re.search(rf"^  {option} {metavar} ", text, re.MULTILINE), option
    # A flag takes no value, as its help shows.
    refused = run_wa_export(["export", "--dry-run", "true"], cli_env(tmp_path), tmp_path)
    assert refused.returncode == 2 and "unexpected extra argument" in refused.stderr and "(true)" in refused.stderr


def test_brackets_in_help_text_are_printed(tmp_path):
    text = run_wa_export(["demo", "--help"], cli_env(tmp_path), tmp_path).stdout
    assert "pip install 'wa-export[demo]'" in text
    # Rich read "[default: ...]" in a help text as a markup tag; plain help prints it.
    cleanup = " ".join(run_wa_export(["cleanup", "--help"], cli_env(tmp_path), tmp_path).stdout.split())
    assert "[default: EXPORT_CLEANUP_DAYS]" in cleanup
    stats = run_wa_export(["stats", "--help"], cli_env(tmp_path), tmp_path).stdout
    assert stats.startswith("Usage: wa-export stats [OPTIONS] [WORKSPACE_ID]\n")  # not [[WORKSPACE_ID]]
    assert "With WORKSPACE_ID, that one workspace" in stats


def test_version(tmp_path):
    result = run_wa_export(["--version"], cli_env(tmp_path), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wa-export {version('wa-export')}\n"
