"""`--json` means one JSON document on stdout, even for a command-line parse error.

Runs the installed `wa-export`; none of these invocations reaches MongoDB or SMTP.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import parse_json
from inprocess_cli import run_wa_export
from seeding import cli_env


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return cli_env(tmp_path, {"MONGODB_URI": "mongodb://127.0.0.1:9/?serverSelectionTimeoutMS=200"}, extra)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--json", "--hours", "abc"], "Invalid value for '--hours'"),
        (["export", "--json", "--bogus"], "No such option: --bogus"),
        (["cleanup", "--days", "abc", "--json"], "Invalid value for '--days'"),
        (["--env-file", "X", "--json", "health"], "No such option: --json"),
        (["stats", "--days", "x", "--json"], "Invalid value for '--days'"),
        (["no-such-command", "--json"], "No such command 'no-such-command'"),
    ],
)
def test_usage_error_with_json_is_one_json_document(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_wa_export(args, _env(tmp_path), tmp_path, timeout=60)
    assert result.returncode == 2, result.stderr
    document = parse_json(result)
    assert document["ok"] is False and document["exit_code"] == 2
    assert document["error"].startswith(message)
    # stderr: the same sentence on one line, no usage box.
    assert result.stderr.splitlines() == [f"wa-export: {document['error']}"]


def test_usage_error_without_json_is_unchanged(tmp_path: Path) -> None:
    result = run_wa_export(["export", "--hours", "abc"], _env(tmp_path), tmp_path, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Usage: wa-export export" in result.stderr and "Invalid value for '--hours'" in result.stderr


def test_help_with_json_still_prints_help(tmp_path: Path) -> None:
    result = run_wa_export(["export", "--json", "--help"], _env(tmp_path), tmp_path, timeout=60)
    assert result.returncode == 0
    assert "Usage: wa-export export" in result.stdout and "--workers" in result.stdout


def test_exit_codes_of_commands_are_kept_with_json(tmp_path: Path) -> None:
    bad = run_wa_export(["export", "--json"], _env(tmp_path, EXPORT_TIMEZONE="Mars/Base"), tmp_path, timeout=60)
    assert bad.returncode == 2
    assert "EXPORT_TIMEZONE" in parse_json(bad)["error"]
    unreachable = run_wa_export(["logs", "--json"], _env(tmp_path, MONGODB_TIMEOUT_SECONDS="0.5"), tmp_path, timeout=60)
    assert unreachable.returncode == 3
    assert parse_json(unreachable)["exit_code"] == 3
