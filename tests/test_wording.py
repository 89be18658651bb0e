"""Output reads as written by a person: no "1 workspaces", clean usage lines, whole help summaries."""

from __future__ import annotations

import ast
import re
from datetime import timedelta
from pathlib import Path

import pytest
import typer

from inprocess_cli import run_wa_export
from seeding import add_chat, add_messages, add_workspace, cli_env, utcnow
from wa_export.cli.app import app

SRC = Path(__file__).resolve().parents[1] / "src" / "wa_export"
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
# Words ending in s after a name or a value that are verbs or not plurals at all.
NOT_PLURALS = {"is", "was", "has", "does", "as", "its", "this", "status", "address", "process", "access", "class"}
VERBS_AFTER_A_NAME = {
    "contains",
    "moves",
    "belongs",
    "holds",
    "sets",
    "makes",
    "matches",
    "needs",
    "resolves",
    "records",
}


def _number_then_plural(node: ast.JoinedStr) -> list[str]:
    """`f"{n} workspaces"`-like pieces: a value followed by a plural noun, wrong whenever the value is 1."""
    found = []
    for value, text in zip(node.values, node.values[1:], strict=False):
        if isinstance(value, ast.FormattedValue) and isinstance(text, ast.Constant) and isinstance(text.value, str):
            word = re.match(r" ([a-z_]+s)\b", text.value)
            if word and word.group(1) not in NOT_PLURALS | VERBS_AFTER_A_NAME:
                found.append(f"{{{ast.unparse(value.value)}}}{text.value[:25]}")
    return found


def test_no_number_is_followed_by_a_fixed_plural_in_the_source():
    # Counted nouns go through units.count_noun ("1 workspace", "2 workspaces").
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.JoinedStr):
                offenders += [f"{path.relative_to(SRC)}:{node.lineno}: {piece}" for piece in _number_then_plural(node)]
    assert offenders == []


ONE_PLURAL = re.compile(r"(?<![\d.,:-])\b1 (?!(?:" + "|".join(NOT_PLURALS) + r")\b)([a-z]+s)\b")


def test_one_of_anything_is_singular_in_every_commands_output(mongo_db, make_env, cli, tmp_path):
    workspace_id = add_workspace(mongo_db, "Solo Bakery")
    chat_id = add_chat(mongo_db, workspace_id)
    add_messages(mongo_db, chat_id, [{"content": "one loaf", "timestamp": utcnow() - timedelta(minutes=5)}])
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "baker@example.com"})
    outputs = []
    for args in (
        ["export"],
        ["export", "--dry-run"],
        ["export", "--workspace", str(workspace_id), "--hours", "1", "--no-email"],
        ["cleanup", "--days", "1", "--dry-run"],
        ["stats"],
        ["stats", str(workspace_id), "--days", "1"],
        ["logs"],
        ["logs", "--system"],
        ["state"],
        ["health"],
        ["config"],
    ):
        result = cli(args, env=env)
        assert result.returncode in (0, 1), (args, result.stdout, result.stderr)
        outputs.append((args, result.stdout + result.stderr))
    for args, text in outputs:
        assert ONE_PLURAL.search(text) is None, f"`wa-export {' '.join(args)}`: {ONE_PLURAL.search(text)}\n{text}"


@pytest.mark.parametrize("name", COMMANDS)
def test_usage_lines_and_help_are_clean(name, tmp_path):
    text = run_wa_export([name, "--help"], cli_env(tmp_path, {"COLUMNS": "100"}), tmp_path).stdout
    usage = text.splitlines()[0]
    assert "[[" not in usage and "<" not in usage, usage
    assert "<str>" not in text and "[[" not in text, text
    # An option is never cut at its hyphen by the line wrapping ("--move-" / "to").
    assert not re.search(r"--[a-z]+-\n", text), text


def test_every_command_summary_is_whole_in_the_command_list(tmp_path):
    text = run_wa_export(["--help"], cli_env(tmp_path, {"COLUMNS": "100"}), tmp_path).stdout
    listing = text[text.index("Commands:") :]
    for name in COMMANDS:
        line = next(line for line in listing.splitlines() if line.strip().startswith(name + " "))
        assert not line.rstrip().endswith("..."), line


def test_system_events_are_named_for_what_they_are(mongo_db, make_env, cli):
    workspace_id = add_workspace(mongo_db, "Solo Bakery")
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "baker@example.com"})
    assert cli(["export"], env=env).returncode == 0
    assert cli(["health"], env=env).returncode in (0, 1)
    lines = cli(["logs", "--system"], env=env).stdout.splitlines()
    header = lines.index(next(line for line in lines if line.startswith("Time")))
    events = {re.split(r"\s{2,}", line)[1] for line in lines[header + 1 :]}
    assert events == {"export run", "health check"}, lines
