"""Deployment examples: systemd units and crontab lines that actually work."""

from __future__ import annotations

import configparser
import grp
import gzip
import os
import pwd
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

from inprocess_cli import run_wa_export
from seeding import cli_executable, run_cli
from wa_export.commands.deploy import deploy

ROOT = Path(__file__).resolve().parent.parent
# The one copy of each deploy file: package data, printed and written by `wa-export deploy`.
DEPLOY_FILES = ROOT / "src" / "wa_export" / "deploy_files"
UNITS = DEPLOY_FILES / "systemd"
LOGROTATE = DEPLOY_FILES / "logrotate" / "wa-export"
CRONTAB = DEPLOY_FILES / "cron" / "wa-export.crontab"
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
        for key, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "PrivateTmp": "yes",
            "UMask": "0077",
            "ReadWritePaths": "/var/lib/wa-export",
        }.items():
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
    # The units as `wa-export deploy systemd --to DIR` writes them; verify insists that ExecStart
    # exists, so they are pointed at this venv's console script.
    written = tmp_path / "written"
    written.mkdir()
    result = run_wa_export(["deploy", "systemd", "--to", str(written)], {"PATH": os.environ.get("PATH", "")}, tmp_path)
    assert result.returncode == 0, result.stderr
    checked = tmp_path / "checked"
    checked.mkdir()
    for unit in written.iterdir():
        (checked / unit.name).write_text(unit.read_text().replace(INSTALLED_BINARY, str(cli_executable())))
    units = sorted(str(path) for path in checked.iterdir())
    assert len(units) == len(PAIRS) * 2
    result = subprocess.run([analyze, "verify", "--man=no", *units], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    noise = [line for line in result.stderr.splitlines() if "wa-export" in line]
    assert noise == [], result.stderr  # e.g. "Unknown key ..., ignoring" exits 0 but is a bug


def test_crontab_lines_use_registered_commands(tmp_path):
    lines = [
        line
        for line in CRONTAB.read_text().splitlines()
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


# Each service's sandbox beyond the basics above. Not here on purpose: PrivateNetwork= and
# IPAddressDeny=, since every unit must reach MongoDB and SMTP at the operator's addresses.
HARDENING = {
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "PrivateMounts": "yes",
    "PrivateUsers": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "ProtectClock": "yes",
    "ProtectHostname": "yes",
    "ProtectProc": "invisible",
    "ProcSubset": "pid",
    "RestrictSUIDSGID": "yes",
    "RestrictRealtime": "yes",
    "RestrictNamespaces": "yes",
    "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes",
    "RemoveIPC": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "SystemCallArchitectures": "native",
    "SystemCallErrorNumber": "EPERM",
    "CapabilityBoundingSet": "",
}
MAX_EXPOSURE = 2.0


def _service_values(name: str) -> dict[str, list[str]]:
    """Every value of every [Service] key, in order (configparser keeps only the last one,
    but SystemCallFilter= lines add up)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in (UNITS / name).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_services_have_the_full_sandbox():
    for service_name in PAIRS:
        values = _service_values(service_name)
        for key, expected in HARDENING.items():
            assert values.get(key, [None])[-1] == expected, (service_name, key, values.get(key))
        assert values["SystemCallFilter"] == ["@system-service", "~@privileged @resources"], service_name
        assert "PrivateNetwork" not in values and "IPAddressDeny" not in values, service_name
        # ProtectHome hides /root and /home; the state directory is the only writable path.
        assert values["ReadWritePaths"] == ["/var/lib/wa-export"], service_name


def test_security_exposure_is_at_most_two(tmp_path):
    # systemd-analyze is part of this machine image (and CI's): no fallback, no skip.
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze not found: install systemd (Debian package) on this machine"
    deploy("systemd", tmp_path)  # the units as an operator installs them
    for service_name in PAIRS:
        result = subprocess.run(
            [analyze, "security", "--offline=yes", "--no-pager", str(tmp_path / service_name)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "SYSTEMD_COLORS": "0"},
        )
        assert result.returncode == 0, result.stderr
        found = re.search(rf"Overall exposure level for {re.escape(service_name)}: (\d+\.\d+)", result.stdout)
        assert found, result.stdout + result.stderr
        exposure = float(found.group(1))
        assert exposure <= MAX_EXPOSURE, f"{service_name}: exposure {exposure}\n{result.stdout}"


def _logrotate() -> str:
    # Not skipped when missing: CI must install it (`apt-get install -y logrotate`).
    found = shutil.which("logrotate") or shutil.which("logrotate", path="/usr/sbin:/sbin")
    assert found, "logrotate not found: apt-get install -y logrotate"
    return found


def _crontab_logs() -> set[str]:
    text = CRONTAB.read_text()
    return set(re.findall(r">>\s*(\S+)\s+2>&1\s*$", text, flags=re.MULTILINE))


def test_logrotate_covers_the_cron_logs():
    text = LOGROTATE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    header = lines[0]
    assert header.endswith("{") and lines[-1] == "}", text
    assert (
        set(header[:-1].split())
        == _crontab_logs()
        == {f"/var/log/wa-export/{name}.log" for name in ("export", "cleanup", "health")}
    )
    body = set(lines[1:-1])
    # The user that cron runs as and the units' User= (the owner of /var/log/wa-export).
    user = _unit("wa-export.service")["Service"]["User"]
    assert {
        f"su {user} {user}",
        f"create 0640 {user} {user}",
        "compress",
        "delaycompress",
        "missingok",
        "notifempty",
    } <= body, body
    assert body & {"daily", "weekly"}, body
    assert any(re.fullmatch(r"rotate [1-9]\d*", line) for line in body), body


def _logrotate_config_as_me(log_dir: Path | None = None) -> str:
    """The shipped file with the su/create owner replaced by the user running the tests (wa-export
    does not exist on a test machine, and logrotate rejects unknown users), and optionally the
    log paths moved into `log_dir`."""
    me, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    text = LOGROTATE.read_text().replace("wa-export wa-export", f"{me} {group}")
    if log_dir is not None:
        text = text.replace("/var/log/wa-export/", f"{log_dir}/")
    assert f"su {me} {group}" in text
    return text


def test_logrotate_accepts_the_file(tmp_path):
    config = tmp_path / "wa-export.conf"
    config.write_text(_logrotate_config_as_me())
    config.chmod(0o644)  # logrotate ignores group/world-writable config files
    result = subprocess.run(
        [_logrotate(), "--debug", "--state", str(tmp_path / "state"), str(config)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower(), result.stderr
    assert "rotating pattern: /var/log/wa-export/export.log" in result.stderr, result.stderr


def test_logrotate_rotates_compresses_and_recreates(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir(mode=0o700)
    config = tmp_path / "wa-export.conf"
    config.write_text(_logrotate_config_as_me(logs))
    config.chmod(0o644)
    log = logs / "export.log"
    for run in ("first", "second", "third"):
        with log.open("a") as handle:  # what cron's >> does
            handle.write(f"{run} run\n")
        result = subprocess.run(
            [_logrotate(), "--force", "--state", str(tmp_path / "state"), str(config)],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
    assert log.read_text() == "" and (log.stat().st_mode & 0o777) == 0o640  # create 0640
    assert (logs / "export.log.1").read_text() == "third run\n"  # delaycompress: newest stays plain
    assert gzip.decompress((logs / "export.log.2.gz").read_bytes()) == b"second run\n"
    assert gzip.decompress((logs / "export.log.3.gz").read_bytes()) == b"first run\n"
    assert not (logs / "cleanup.log").exists()  # missingok: absent logs are no error, and not created
