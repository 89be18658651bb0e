"""`./dev test` as the README's Quick start writes it is the whole CI: it installs the system tools
the tests drive, and `.ci/run` adds nothing to it."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "dev"
# Essential packages of every Debian system: nothing to install.
BASE_SYSTEM = {"bash", "sh", "dirname"}


def _system_tools() -> dict[str, str]:
    """PROGRAM -> Debian package, from the dev script's SYSTEM_TOOLS line."""
    line = re.search(r'^SYSTEM_TOOLS="([^"]*)"$', DEV.read_text(), flags=re.MULTILINE)
    assert line is not None, "dev has no SYSTEM_TOOLS line"
    return dict(pair.split(":", 1) for pair in line.group(1).split())


def test_ci_runs_exactly_the_quick_start_line():
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands == ["set -euo pipefail", 'cd "$(dirname "$0")/.."', "./dev test"]
    assert "./dev test" in (ROOT / "README.md").read_text().split("## ", 2)[1]  # the Quick start section


def test_every_program_the_tests_look_up_is_installed_by_dev():
    looked_up = set()
    for path in (ROOT / "tests").glob("*.py"):
        looked_up |= set(re.findall(r'shutil\.which\("([\w.-]+)"', path.read_text()))
    assert {"logrotate", "faketime", "systemd-analyze", "soffice"} <= looked_up
    missing = looked_up - set(_system_tools()) - BASE_SYSTEM
    assert missing == set(), f"not installed by ./dev: {missing}"


def _stub_bin(tmp_path: Path, uid: int) -> tuple[Path, Path]:
    """A PATH holding none of the tools: `id` says `uid`, `apt-get` records its arguments."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    record = tmp_path / "apt-get.log"
    (stubs / "id").write_text(f"#!/bin/sh\necho {uid}\n")
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {shlex.quote(str(record))}\n')
    for stub in ("id", "apt-get"):
        (stubs / stub).chmod(0o755)
    for program in ("dirname", "sh"):  # what the script itself runs
        found = shutil.which(program)
        assert found is not None
        (stubs / program).symlink_to(found)
    return stubs, record


def _run_dev_tools(stubs: Path) -> subprocess.CompletedProcess[str]:
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(DEV), "tools"],
        env={"PATH": str(stubs), "HOME": os.environ.get("HOME", "/root")},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_as_root_dev_installs_every_missing_tool_with_apt_get(tmp_path):
    stubs, record = _stub_bin(tmp_path, uid=0)
    result = _run_dev_tools(stubs)
    assert result.returncode == 0, result.stderr
    calls = record.read_text().splitlines()
    assert calls[0] == "update -qq"
    install = calls[1].split()
    assert install[:3] == ["install", "-y", "-qq"]
    assert set(_system_tools().values()) <= set(install[3:])


def test_without_root_dev_names_the_packages_in_one_sentence(tmp_path):
    stubs, record = _stub_bin(tmp_path, uid=1000)
    result = _run_dev_tools(stubs)
    assert result.returncode == 1 and not record.exists()
    message = result.stderr.strip()
    assert "\n" not in message and "apt-get install" in message, message
    for package in _system_tools().values():
        assert package in message
