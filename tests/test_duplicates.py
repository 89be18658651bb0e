"""Never a silent duplicate, through the installed CLI.

- A slow SMTP DATA reply outlives EXPORT_LEASE_SECONDS: the lease is renewed
   while the run waits, so a second run skips the workspace: one email.
- MongoDB stops right after the SMTP server accepted a mail: the next run
   delivers that window again, and the email, export_logs, `logs` and
   `health` all say it may repeat the earlier one.
"""

from __future__ import annotations

import subprocess
import time
from datetime import UTC, datetime, timedelta

from faultkit import (
    SMTP_PASSWORD,
    SMTP_USER,
    AuthMongoServer,
    assert_no_secrets,
    delivered,
    no_traceback,
)
from helpers import (
    LEASE_HELD,
    HookedSmtpServer,
    SlowDataSmtpServer,
    parse_json,
    plain_body,
)
from inprocess_cli import run_wa_export
from seeding import seed_workspace, start_cli
from wa_export.export.email_text import POSSIBLE_DUPLICATE_SENTENCE


def test_a_slow_data_reply_keeps_the_lease_and_a_second_run_sends_nothing(tmp_path, fdb, env):
    contents = ["slow-1", "slow-2"]
    workspace_id = seed_workspace(fdb, "Slow Server", contents)
    lease_seconds = 5
    with SlowDataSmtpServer(hold_seconds=2.5 * lease_seconds, username=SMTP_USER, password=SMTP_PASSWORD) as slow:
        run_env = env(
            slow,
            EXPORT_LEASE_SECONDS=str(lease_seconds),
            SMTP_TIMEOUT_SECONDS="60",
            **{f"WORKSPACE_{workspace_id}_EMAIL": "ops@slow.test"},
        )
        first = start_cli(["export", "--json"], run_env, tmp_path)
        try:
            assert slow.data_started.wait(60), "the first run never reached DATA"
            state = fdb.export_state.find_one({"_id": str(workspace_id)})
            acquired = state["lease_acquired_at"].replace(tzinfo=UTC)
            # Well past the lease the first run took: without renewals it would have expired by now.
            delay = (acquired + timedelta(seconds=lease_seconds * 1.5) - datetime.now(UTC)).total_seconds()
            time.sleep(max(delay, 0))
            assert first.poll() is None, "test setup: the first run finished before the lease ran out"
            second = run_wa_export(["export", "--json"], run_env, tmp_path, timeout=90)
            stdout, stderr = first.communicate(timeout=90)
        finally:
            if first.poll() is None:
                first.kill()
                first.communicate(timeout=10)
        mails = list(slow.messages)
    assert len(mails) == 1, "exactly one email, although the DATA reply took longer than the lease"
    assert first.returncode == 0, stdout + stderr
    assert second.returncode == 0, second.stdout + second.stderr
    [skipped] = parse_json(second)["workspaces"]
    assert skipped["outcome"] == "skipped" and skipped["reason"] == LEASE_HELD
    [done] = parse_json(subprocess.CompletedProcess([], 0, stdout, stderr))["workspaces"]
    assert done["outcome"] == "completed"
    assert sorted(delivered(mails)) == contents
    assert fdb.export_logs.count_documents({"status": "completed"}) == 1
    assert fdb.export_logs.count_documents({"possible_duplicate": True}) == 0


def test_a_mail_accepted_while_mongodb_stops_is_delivered_again_and_flagged(tmp_path, env):
    server = AuthMongoServer(data_path=tmp_path / "db").start()
    hooked = HookedSmtpServer(username=SMTP_USER, password=SMTP_PASSWORD).start()
    outputs: list[str] = []
    try:
        db = server.client()["wa_export_duplicate"]
        contents = ["dup-1", "dup-2", "dup-3"]
        workspace_id = seed_workspace(db, "Twice Maybe", contents)
        run_env = env(
            hooked,
            MONGODB_URI=server.auth_uri,
            MONGODB_DATABASE=db.name,
            MONGODB_TIMEOUT_SECONDS="2",
            EXPORT_LEASE_SECONDS="5",
            **{f"WORKSPACE_{workspace_id}_EMAIL": "ops@twice.test"},
        )
        # The SMTP server has the whole message when MongoDB dies; its 250 reply follows.
        hooked.on_message = server.kill
        first = run_wa_export(["export"], run_env, tmp_path, timeout=90)
        outputs += [first.stdout, first.stderr]
        assert first.returncode == 3, first.stdout + first.stderr
        no_traceback(first.stdout, first.stderr)
        assert len(hooked.messages) == 1
        assert POSSIBLE_DUPLICATE_SENTENCE not in plain_body(hooked.messages[0].message())

        server.restart()
        db = server.client()[db.name]
        [sending] = list(db.export_logs.find())
        assert sending["status"] == "sending", "the intent was recorded before the mail went out"
        time.sleep(5.5)  # the dead run's lease expires (EXPORT_LEASE_SECONDS=5)

        again = run_wa_export(["export", "--json"], run_env, tmp_path, timeout=90)
        outputs += [again.stdout, again.stderr]
        assert again.returncode == 0, again.stdout + again.stderr
        [workspace] = parse_json(again)["workspaces"]
        assert workspace["outcome"] == "completed" and workspace["possible_duplicate"] is True
        assert "possible duplicate" in parse_json(again)["summary"]
        assert len(hooked.messages) == 2
        assert sorted(delivered(hooked.messages[1:])) == contents, "nothing lost: the whole window again"
        body = plain_body(hooked.messages[1].message())
        assert POSSIBLE_DUPLICATE_SENTENCE in body

        closed = db.export_logs.find_one({"_id": sending["_id"]})
        assert closed["status"] == "failed" and closed["error_message"].startswith("delivery outcome unknown")
        [redelivered] = list(db.export_logs.find({"status": "completed"}))
        assert redelivered["possible_duplicate"] is True and redelivered["message_count"] == len(contents)
        state = db.export_state.find_one({"_id": str(workspace_id)})
        assert state["in_flight"] is None and state["last_possible_duplicate_at"] is not None

        logs = run_wa_export(["logs"], run_env, tmp_path)
        outputs += [logs.stdout, logs.stderr]
        assert logs.returncode == 0, logs.stdout + logs.stderr
        [line] = [line for line in logs.stdout.splitlines() if "completed" in line]
        assert "possible duplicate" in line
        logs_json = parse_json(run_wa_export(["logs", "--json"], run_env, tmp_path))
        assert [entry["possible_duplicate"] for entry in logs_json["entries"]] == [True, False]

        health = run_wa_export(["health", "--json"], run_env, tmp_path)
        outputs += [health.stdout, health.stderr]
        checks = {check["name"]: check for check in parse_json(health)["checks"]}
        assert checks["possible_duplicates"]["status"] == "warning"
        assert "Twice Maybe" in checks["possible_duplicates"]["reason"]
        assert_no_secrets(*outputs, db=db, mails=hooked.messages)
    finally:
        hooked.stop()
        server.kill()
