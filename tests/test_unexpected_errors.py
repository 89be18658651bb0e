"""A bug inside one workspace's export: its traceback reaches stderr (redacted), the others are still delivered.

The bug is injected into the real `wa-export` process (and into `--workers`
children, which are processes of their own) through a `sitecustomize` module on
PYTHONPATH, which Python imports at start-up: it wraps one library method to
raise for one workspace id, with the SMTP password in the exception's message.
Nothing in wa-export knows about it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from helpers import mailed_contents, parse_json, smtp_env
from seeding import add_chat, add_messages, add_workspace, utcnow
from servers import LocalSmtpServer

SMTP_PASSWORD = "Sm7p-pass-in-the-bug"

INJECTION = """
import os

_target = os.environ.get("WA_EXPORT_TEST_BUG_IN_WORKSPACE")
if _target:
    from wa_export.export import delivery as window

    _rows = window.WorkspaceExport.rows

    def explode_for_one_workspace(self, *args, **kwargs):
        if self.item.workspace.id == _target:
            raise TypeError("injected bug holding the password " + os.environ["SMTP_PASSWORD"])
        return _rows(self, *args, **kwargs)

    window.WorkspaceExport.rows = explode_for_one_workspace
"""


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two workers"])
def test_a_bug_in_one_workspace_prints_its_redacted_traceback_and_the_others_are_delivered(
    mongo_db, make_env, cli_process, tmp_path: Path, workers: int
):
    broken, healthy = add_workspace(mongo_db, "Broken Co"), add_workspace(mongo_db, "Healthy Co")
    arrived = utcnow() - timedelta(minutes=5)
    add_messages(mongo_db, add_chat(mongo_db, broken), [{"content": "never exported", "timestamp": arrived}])
    add_messages(mongo_db, add_chat(mongo_db, healthy), [{"content": "delivered anyway", "timestamp": arrived}])
    injection = tmp_path / "injection"
    injection.mkdir()
    (injection / "sitecustomize.py").write_text(INJECTION, encoding="utf-8")

    with LocalSmtpServer(tls="starttls", username="exporter", password=SMTP_PASSWORD) as server:
        env = make_env(
            **smtp_env(server),
            PYTHONPATH=str(injection),
            WA_EXPORT_TEST_BUG_IN_WORKSPACE=str(broken),
            **{f"WORKSPACE_{broken}_EMAIL": "ops@broken.test", f"WORKSPACE_{healthy}_EMAIL": "ops@healthy.test"},
        )
        args = ["export", "--json"] + (["--workers", str(workers)] if workers > 1 else [])
        result = cli_process(args, env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert mailed_contents(server.wait_for_messages(1)) == ["delivered anyway"]

    assert f"internal error in workspace {broken} (Broken Co)" in result.stderr
    assert result.stderr.count("Traceback (most recent call last)") == 1, result.stderr  # once, from the one process
    assert "in explode_for_one_workspace" in result.stderr and "in write_parts" in result.stderr
    assert "TypeError: injected bug holding the password ***" in result.stderr
    assert SMTP_PASSWORD not in result.stderr + result.stdout
    by_id = {workspace["workspace_id"]: workspace for workspace in parse_json(result)["workspaces"]}
    assert by_id[str(healthy)]["outcome"] == "completed" and by_id[str(healthy)]["traceback"] is None
    failed = by_id[str(broken)]
    assert failed["outcome"] == "failed" and failed["reason"].startswith("internal error (TypeError: injected bug")
    assert "in explode_for_one_workspace" in failed["traceback"]
