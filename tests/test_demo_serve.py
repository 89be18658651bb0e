"""`wa-export demo --serve`: the demo's servers stay up so every other command can be tried on its data,
and nothing outlives Ctrl-C. A second demo starts afresh."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from helpers import start_demo
from seeding import cli_env, cli_executable, run_cli

DEMO_NAMES = ("Café Olé 🌮 Ristorante", "Acme Support")


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_until_ready(process: subprocess.Popen[str], deadline: float) -> list[str]:
    """The demo's stdout up to its ready line."""
    assert process.stdout is not None
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, f"the demo ended before it was ready: {lines} {process.communicate(timeout=30)}"
        lines.append(line.rstrip("\n"))
        if line.startswith("Ready"):
            return lines
    raise AssertionError(f"not ready in time: {lines}")


def test_serve_keeps_the_demo_up_for_every_command_and_ctrl_c_leaves_nothing_running(tmp_path):
    out = tmp_path / "demo-out"
    # As in a fresh clone: the venv's bin folder is not on PATH, so a bare `wa-export` would not be found.
    bindir = str(cli_executable().parent)
    path = os.pathsep.join(entry for entry in os.environ.get("PATH", "").split(os.pathsep) if entry != bindir)
    process = start_demo(["--serve", "--out", str(out)], tmp_path, path)
    try:
        printed = _wait_until_ready(process, time.monotonic() + 120)
        env_file = out / ".env"
        assert env_file.stat().st_mode & 0o777 == 0o600
        # The printed environment is the file's, the password excepted.
        assert f"MONGODB_URI={_value(env_file, 'MONGODB_URI')}" in [line.strip() for line in printed]
        assert _value(env_file, "SMTP_PASSWORD") not in "\n".join(printed)
        tries = [line.strip() for line in printed if f"--env-file {env_file}" in line]
        assert tries
        # The commands to try work as printed from another terminal: the program is found.
        for line in tries:
            program = shlex.split(line)[0]
            assert shutil.which(program, path=path) or Path(program).is_file(), line
        children = psutil.Process(process.pid).children(recursive=True)
        assert children, "the MongoDB-compatible server runs as a child process"

        # Another terminal: no environment of its own, only the demo's env file.
        other = tmp_path / "elsewhere"
        other.mkdir()
        for command in (["stats"], ["logs"], ["state"], ["health"]):
            result = run_cli(["--env-file", str(env_file), *command], cli_env(other), other, timeout=60)
            assert result.returncode == 0, (command, result.stdout, result.stderr)
            for name in DEMO_NAMES if command != ["health"] else ():
                assert name in result.stdout, (command, result.stdout)
        health = run_cli(["--env-file", str(env_file), "health", "--json"], cli_env(other), other, timeout=60)
        assert '"mongodb"' in health.stdout and "2 active workspaces" in health.stdout.replace("\\n", " ")
        # The demo's own data is healthy: no address for its inactive tenant to warn about.
        checks = {check["name"]: check["status"] for check in json.loads(health.stdout)["checks"]}
        assert checks["workspace_addresses"] == "ok", health.stdout

        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
        stopped_in = time.monotonic() - started
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert stopped_in < 10 and "Traceback" not in stderr
    assert [child.pid for child in children if _alive(child.pid)] == []


def _value(env_file: Path, name: str) -> str:
    for line in env_file.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1]
    raise AssertionError(f"{name} not in {env_file}")


def test_sigterm_stops_a_serving_demo_like_ctrl_c(tmp_path):
    process = start_demo(["--serve", "--out", str(tmp_path / "out")], tmp_path)
    try:
        _wait_until_ready(process, time.monotonic() + 120)
        children = psutil.Process(process.pid).children(recursive=True)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0 and "Traceback" not in stderr
    assert [child.pid for child in children if _alive(child.pid)] == []


def test_a_second_demo_starts_from_a_clean_folder(cli, tmp_path):
    out = tmp_path / "demo-out"
    first = cli(["demo", "--out", str(out)])
    assert first.returncode == 0, first.stdout + first.stderr
    before = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    second = cli(["demo", "--out", str(out)])
    assert second.returncode == 0, second.stdout + second.stderr
    after = sorted(path.relative_to(out) for path in out.rglob("*") if path.is_file())
    # The same kinds of files, as many as the first time: no `_2` workbook, no 00N.eml next to old ones.
    assert len(after) == len(before)
    assert not [path for path in after if path.stem.endswith("_2")]


@pytest.mark.parametrize("foreign", ["exports/notes.txt", "mail/letter.doc", ".env"])
def test_a_folder_holding_other_files_is_refused_not_emptied(cli, tmp_path, foreign):
    out = tmp_path / "somewhere"
    (out / foreign).parent.mkdir(parents=True)
    (out / foreign).write_text("mine")
    result = cli(["demo", "--out", str(out)])
    assert result.returncode == 2 and "--out" in result.stderr
    assert (out / foreign).read_text() == "mine"
