"""Deployment examples (issue 3, acceptance 7): systemd units and crontab lines that actually work."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

from seeding import cli_executable, run_cli

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/wa-export/bin/wa-export"
# service -> (timer, subcommand)
PAIRS = {
    "wa-export.service": ("wa-export.timer", "export"),
    "wa-export-cleanup.service": ("wa-export-cleanup.timer", "cleanup"),
    "wa-export-health.service": ("wa-export-health.timer", "health"),
}


def _unit(name: str) -> configparser.ConfigParser:
    # systemd allows repeated keys and empty values (CapabilityBoundingSet=); keep the last.
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string((UNITS / name).read_text())
    return parser


def _console_scripts() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"])


def _subcommand(argv: list[str]) -> str:
    """The wa-export subcommand in an argv, skipping the global --env-file option."""
    rest = argv[1:]
    while rest and rest[0].startswith("-"):
        rest = rest[2:] if rest[0] == "--env-file" else rest[1:]
    assert rest, argv
    return rest[0]


def _help_works(subcommand: str, tmp_path: Path) -> None:
    result = run_cli([subcommand, "--help"], {"PATH": os.environ.get("PATH", "")}, tmp_path, timeout=60)
    assert result.returncode == 0, f"`wa-export {subcommand} --help` failed: {result.stderr}"


def test_units_parse_with_the_required_settings(tmp_path):
    assert {path.name for path in UNITS.iterdir()} == set(PAIRS) | {timer for timer, _ in PAIRS.values()}
    for service_name, (timer_name, subcommand) in PAIRS.items():
        service = _unit(service_name)["Service"]
        assert service["Type"] == "oneshot"
        assert service["User"] == "wa-export"
        argv = shlex.split(service["ExecStart"])
        assert argv[0] == INSTALLED_BINARY and Path(argv[0]).name in _console_scripts()
        assert argv[1:3] == ["--env-file", "/etc/wa-export/env"]
        assert _subcommand(argv) == subcommand
        for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                           "UMask": "0077", "ReadWritePaths": "/var/lib/wa-export"}.items():
            assert service[key] == value, (service_name, key)
        assert int(service["TimeoutStopSec"]) >= 60  # SIGTERM: the current workspace may finish

        timer = _unit(timer_name)
        assert timer["Timer"]["Persistent"] == "true"
        assert timer["Install"]["WantedBy"] == "timers.target"
    assert _unit("wa-export.timer")["Timer"]["OnCalendar"] == "*:0/15"


def test_systemd_analyze_accepts_the_units(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:  # no systemd here: the parsing test above is the check
        test_units_parse_with_the_required_settings(tmp_path)
        return
    # verify insists that ExecStart exists: point it at this venv's console script.
    for unit in UNITS.iterdir():
        text = unit.read_text().replace(INSTALLED_BINARY, str(cli_executable()))
        (tmp_path / unit.name).write_text(text)
    units = sorted(str(path) for path in tmp_path.iterdir())
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    noise = [line for line in result.stderr.splitlines() if "wa-export" in line]
    assert noise == [], result.stderr  # e.g. "Unknown key ..., ignoring" exits 0 but is a bug


def test_crontab_lines_use_registered_commands(tmp_path):
    lines = [
        line for line in (ROOT / "crontab.example").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#") and "=" not in line.split()[0]
    ]
    subcommands = []
    for line in lines:
        fields = line.split(None, 5)
        assert len(fields) == 6, line
        command = shlex.split(fields[5])
        assert command[0] == INSTALLED_BINARY and Path(command[0]).name in _console_scripts(), line
        subcommands.append(_subcommand(command[: command.index(">>")] if ">>" in command else command))
    assert {"export", "health"} <= set(subcommands)
    assert next(line for line in lines if " export" in line).split()[0] == "*/15"
    for subcommand in sorted(set(subcommands) | {sub for _, sub in PAIRS.values()}):
        _help_works(subcommand, tmp_path)
