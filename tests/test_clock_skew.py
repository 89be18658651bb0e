"""A host clock an hour off neither skips nor repeats a message.

One run of the installed `wa-export export` under `faketime` (this process's
clock 1 h ahead or behind; the MongoDB server keeps the right time), with
normal runs before and after it and messages arriving in between: every
message is emailed exactly once over the whole sequence.

libfaketime 0.9.10 makes Python 3.13's `time.sleep` fail with EINVAL and
timed lock waits hang unless FAKETIME_DONT_FAKE_MONOTONIC=1: the faked process
alone gets a `sitecustomize` that sleeps with `select` instead. The product is
not changed for it. Needs the `faketime` package (Debian: apt-get install faketime).
"""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import mailed_contents
from seeding import (
    add_chat,
    add_messages,
    add_workspace,
    cli_executable,
    settle_arrivals,
    utcnow,
)

SLEEP_WITHOUT_CLOCK_NANOSLEEP = """
import select
import time


def _sleep(seconds):
    if seconds > 0:
        select.select([], [], [], seconds)


time.sleep = _sleep
"""


def _faketime() -> str:
    found = shutil.which("faketime")
    assert found, "this test needs the faketime program (Debian/Ubuntu: apt-get install faketime)"
    return found


@pytest.mark.parametrize("offset", ["+1h", "-1h"])
def test_a_run_with_the_host_clock_an_hour_off_loses_and_repeats_nothing(
    offset, mongo_db, make_env, tmp_path, smtp_server
):
    faketime = _faketime()
    workspace_id = add_workspace(mongo_db, "Skewed Host")
    chat_id = add_chat(mongo_db, workspace_id)
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@skew.test"})
    shim = tmp_path / "faked-python"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(SLEEP_WITHOUT_CLOCK_NANOSLEEP)
    skewed_env = {**env, "FAKETIME_DONT_FAKE_MONOTONIC": "1", "PYTHONPATH": str(shim)}

    def run(skewed: bool) -> subprocess.CompletedProcess[str]:
        command = [str(cli_executable()), "export"]
        if skewed:
            command = [faketime, "-f", offset, *command]
        return subprocess.run(
            command,
            env=skewed_env if skewed else env,
            cwd=tmp_path,
            text=True,
            check=False,
            capture_output=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )

    inserted: list[str] = []

    def arrive(tag: str) -> None:
        contents = [f"{tag}-{index}" for index in range(2)]
        add_messages(mongo_db, chat_id, [{"content": text, "timestamp": utcnow()} for text in contents])
        inserted.extend(contents)

    arrive("before-first")
    first = run(skewed=False)
    assert first.returncode == 0, first.stdout + first.stderr
    arrive("before-skewed")
    skewed = run(skewed=True)
    assert skewed.returncode in (0, 1), skewed.stdout + skewed.stderr
    assert "Traceback" not in skewed.stderr
    for tag in ("after-skewed", "later"):
        arrive(tag)
        normal = run(skewed=False)
        assert normal.returncode == 0, normal.stdout + normal.stderr
    settle_arrivals()
    last = run(skewed=False)
    assert last.returncode == 0, last.stdout + last.stderr

    assert Counter(mailed_contents(smtp_server.messages)) == Counter(inserted), "every message exactly once"
    # The cursor never ran ahead of the database's clock.
    state = mongo_db.export_state.find_one({"_id": str(workspace_id)})
    assert state["cursor"].generation_time <= utcnow() + timedelta(seconds=1)
    assert Path(env["EXPORT_DIR"]).exists()
