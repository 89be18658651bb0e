"""The package promises Python 3.11 (requires-python); the suite itself runs on 3.13, which its test servers need.

`./dev` installs the package with its own dependencies only into `.venv-oldest` on Python 3.11, and these tests
run that console script against the suite's MongoDB and SMTP servers: the process on the oldest Python is the point.
A crash found there once (a work item compared field by field on 3.11/3.12) stopped every workspace's delivery.
"""

from __future__ import annotations

import subprocess
from datetime import timedelta
from pathlib import Path
from typing import Any

from helpers import mailed_contents, parse_json
from seeding import add_chat, add_messages, add_workspace, utcnow

OLDEST = Path(__file__).resolve().parent.parent / ".venv-oldest" / "bin"


def _oldest(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    assert (OLDEST / "wa-export").exists(), (
        "no .venv-oldest: `./dev test` (or `./dev pytest`) makes it with Python 3.11"
    )
    return subprocess.run(
        [str(OLDEST / "wa-export"), *args], env=env, cwd=cwd, text=True, capture_output=True, timeout=120, check=False
    )


def test_the_console_script_runs_on_python_3_11():
    version = subprocess.run([str(OLDEST / "python"), "--version"], text=True, capture_output=True, check=True)
    assert version.stdout.startswith("Python 3.11."), version.stdout


def test_a_scheduled_run_on_python_3_11_fails_only_the_workspace_with_a_foreign_cursor(
    mongo_db: Any, make_env: Any, smtp_server: Any, tmp_path: Path
):
    steady, switching = add_workspace(mongo_db, "Steady Co"), add_workspace(mongo_db, "Switching Co")
    steady_chat, switching_chat = (
        add_chat(mongo_db, steady),
        add_chat(mongo_db, switching, customer_phone="+4915100000004"),
    )
    add_messages(mongo_db, switching_chat, [{"content": "switching-1", "created_at": utcnow() - timedelta(minutes=2)}])
    first = _oldest(["export"], make_env(**{f"WORKSPACE_{switching}_EMAIL": "s@oldest.test"}), tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    add_messages(mongo_db, steady_chat, [{"content": "steady-1", "created_at": utcnow()}])

    addresses = {f"WORKSPACE_{steady}_EMAIL": "a@oldest.test", f"WORKSPACE_{switching}_EMAIL": "s@oldest.test"}
    dated = make_env(EXPORT_ARRIVAL_FIELD="created_at", **addresses)
    result = _oldest(["export", "--json"], dated, tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    outcomes = {outcome["workspace_name"]: outcome["outcome"] for outcome in parse_json(result)["workspaces"]}
    assert outcomes == {"Steady Co": "completed", "Switching Co": "failed"}
    assert mailed_contents(smtp_server.messages) == ["switching-1", "steady-1"]

    for command in (["state"], ["health"], ["stats"], ["logs"], ["config"]):
        shown = _oldest(command, dated, tmp_path)
        assert shown.returncode in (0, 1) and "Traceback" not in shown.stderr, (command, shown.stdout + shown.stderr)
