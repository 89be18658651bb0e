"""Every mail failure is either refused (nothing delivered) or of unknown outcome (it may have arrived).

The classification lives in wa_export/mail/errors.py. The first tests send one
mail in-process against real servers on 127.0.0.1 and check each kind of
failure lands on its side, with a sentence that says whether sending again may
duplicate. The last two run the installed `wa-export` against an SMTP server
that receives and queues the whole message but answers 250 only after
SMTP_TIMEOUT_SECONDS (as a slow content filter does), once timing out and once
with SIGTERM while the reply is awaited: the intent stays, and the next
delivery of those messages is flagged possible_duplicate in export_logs, in the
email, in `logs` and in `health`.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo.database import Database

from faultkit import (
    SMTP_PASSWORD,
    SMTP_USER,
    Env,
    Run,
    add_now,
    assert_no_secrets,
    delivered,
    no_traceback,
)
from helpers import SlowDataSmtpServer, health_checks, parse_json, plain_body, smtp_env, stop_with_sigterm
from seeding import run_cli, seed_workspace, start_cli
from servers import CapturedMessage, LocalSmtpServer, free_port
from smtp_misbehaving import MisbehavingSmtpServer
from wa_export.export.email_text import POSSIBLE_DUPLICATE_SENTENCE
from wa_export.mail import transport as deadline
from wa_export.mail.errors import MAY_DUPLICATE, MailError, MailOutcome
from wa_export.mail.message import OutgoingMail
from wa_export.mail.transport import STOP_GRACE_SECONDS, MailSender, stop_sends
from wa_export.settings import load_settings

SENDER = "exports@outcome.test"
TO = "ops@outcome.test"
REFUSED, UNKNOWN = MailOutcome.REFUSED, MailOutcome.UNKNOWN


# --- the classification, kind by kind ------------------------------------------------------------


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return tmp_path


@pytest.fixture
def stop_requested(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """SIGTERM's hook called in this process; undone afterwards (it is process-wide and one-way)."""
    monkeypatch.setattr(deadline, "_stop_requested_at", None)
    stop_sends()
    yield


def _failure(environ: dict[str, str], to: str = TO, attachment: Path | None = None) -> MailError:
    settings = load_settings(environ={"SMTP_FROM": SENDER, "SMTP_SECURITY": "none", **environ})
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=(to,), subject="s", body="b", attachment=attachment))
    return caught.value


def _assert_classified(error: MailError, outcome: MailOutcome) -> None:
    """The outcome, and the sentence honest about it: only an unknown outcome warns of a duplicate."""
    assert error.outcome is outcome, (error.step, str(error))
    assert error.outcome_unknown is (outcome is UNKNOWN)
    text = str(error)
    if outcome is UNKNOWN:
        assert text.endswith(f"; {MAY_DUPLICATE}."), text
    else:
        assert "twice" not in text and MAY_DUPLICATE not in text, text
    assert text.endswith(".") and "\n" not in text


def test_refused_before_any_connection(in_tmp: Path) -> None:
    """Settings, the allow-list and the size limit are checked before anything goes out."""
    unset = _failure({"SMTP_SERVER": ""})
    outside = _failure({"SMTP_SERVER": "127.0.0.1", "EXPORT_ALLOWED_EMAIL_DOMAINS": "example.com"})
    big = in_tmp / "big.xlsx"
    big.write_bytes(b"x" * 3 * 2**20)
    too_big = _failure({"SMTP_SERVER": "127.0.0.1", "EXPORT_MAX_ATTACHMENT_MB": "2"}, attachment=big)
    assert (unset.step, outside.step, too_big.step) == ("config", "domain", "size")
    for error in (unset, outside, too_big):
        _assert_classified(error, REFUSED)


def test_refused_at_connect_tls_and_login(in_tmp: Path) -> None:
    unreachable = _failure({"SMTP_SERVER": "127.0.0.1", "SMTP_PORT": str(free_port())})
    with MisbehavingSmtpServer() as plain:  # offers no STARTTLS
        no_tls = _failure({**plain.env(), "SMTP_SECURITY": "starttls"})
    with MisbehavingSmtpServer(auth_mechanisms=("PLAIN",), username=SMTP_USER, password=SMTP_PASSWORD) as guarded:
        wrong_login = _failure({**guarded.env(), "SMTP_PASSWORD": "not-" + SMTP_PASSWORD})
    assert (unreachable.step, no_tls.step, wrong_login.step) == ("connect", "tls", "auth")
    for error in (unreachable, no_tls, wrong_login):
        _assert_classified(error, REFUSED)
    assert plain.payloads_received == guarded.payloads_received == 0


def test_refused_recipient(in_tmp: Path) -> None:
    with LocalSmtpServer(refuse_recipients=[TO], username=SMTP_USER, password=SMTP_PASSWORD) as server:
        error = _failure({**smtp_env(server), "SMTP_SECURITY": "starttls"})
    assert error.step == "recipient" and error.refused == (TO,)
    _assert_classified(error, REFUSED)
    assert server.messages == []


@pytest.mark.parametrize(
    ("replies", "step"),
    [
        ({"MAIL": "550 5.7.1 Sender address rejected"}, "data"),
        ({"MAIL": "552 5.3.4 Message size exceeds fixed limit"}, "size"),  # refused for its SIZE= before the content
        ({"DATA": "554 5.3.0 No valid recipients"}, "data"),  # DATA refused: no 354, no content
    ],
    ids=["sender", "size-announced", "data-command"],
)
def test_refused_before_the_content(replies: dict[str, str], step: str, in_tmp: Path) -> None:
    with MisbehavingSmtpServer(replies=replies) as server:
        error = _failure(server.env())
    assert error.step == step, str(error)
    _assert_classified(error, REFUSED)
    assert server.payloads_received == 0


@pytest.mark.parametrize(("behaviour", "step"), [("drop", "data"), ("stall", "timeout")])
def test_a_lost_connection_or_a_deadline_before_354_is_refused(behaviour: str, step: str, in_tmp: Path) -> None:
    with MisbehavingSmtpServer("data_command", behaviour) as server:  # no 354 ever comes
        error = _failure({**server.env(), "SMTP_TIMEOUT_SECONDS": "1"})
    assert error.step == step, str(error)
    _assert_classified(error, REFUSED)
    assert server.payloads_received == 0


def test_a_stop_before_354_is_refused(in_tmp: Path, stop_requested: None) -> None:
    with MisbehavingSmtpServer("data_command", "stall") as server:
        error = _failure({**server.env(), "SMTP_TIMEOUT_SECONDS": "60"})
    assert error.step == "stopped", str(error)
    _assert_classified(error, REFUSED)
    assert server.payloads_received == 0


@pytest.mark.parametrize(
    ("reply", "step"),
    [
        ("554 5.6.0 Message rejected as spam", "data"),
        ("451 4.3.0 Temporary failure, try again", "data"),
        ("552 5.3.4 Message too big", "size"),
    ],
    ids=["5xx", "4xx", "552"],
)
def test_a_definite_rejection_of_the_content_is_refused(reply: str, step: str, in_tmp: Path) -> None:
    """A 4xx/5xx answer to the content means the server took no responsibility for it."""
    with MisbehavingSmtpServer(data_reply=reply) as server:
        error = _failure(server.env())
    assert error.step == step and reply.split(" ", 1)[0] in str(error), str(error)
    _assert_classified(error, REFUSED)
    assert server.payloads_received == 1


@pytest.mark.parametrize(("behaviour", "step"), [("drop", "data"), ("stall", "timeout")])
def test_a_lost_connection_or_a_deadline_after_the_content_is_unknown(behaviour: str, step: str, in_tmp: Path) -> None:
    with MisbehavingSmtpServer("data", behaviour) as server:  # the whole message arrived, the 250 never does
        error = _failure({**server.env(), "SMTP_TIMEOUT_SECONDS": "1"})
    assert error.step == step, str(error)
    _assert_classified(error, UNKNOWN)
    assert server.payloads_received == 1


def test_a_stalled_reply_is_reported_as_the_deadline_not_a_lost_connection(in_tmp: Path) -> None:
    """The socket waits end at the deadline itself, so no read timeout of smtplib's can pass for a lost connection."""
    with MisbehavingSmtpServer("data", "stall") as server:
        error = _failure({**server.env(), "SMTP_TIMEOUT_SECONDS": "1"})
    assert error.step == "timeout" and "did not finish the message transaction" in str(error), str(error)
    _assert_classified(error, UNKNOWN)


def test_a_stop_after_the_content_is_unknown(in_tmp: Path, stop_requested: None) -> None:
    with MisbehavingSmtpServer("data", "stall") as server:
        error = _failure({**server.env(), "SMTP_TIMEOUT_SECONDS": "60"})
    assert error.step == "stopped" and "asked to stop" in str(error), str(error)
    _assert_classified(error, UNKNOWN)
    assert server.payloads_received == 1


@pytest.mark.parametrize("reply", ["299 2.0.0 Maybe", "Thanks, got it"], ids=["odd-code", "no-code"])
def test_an_unexpected_reply_to_the_content_is_unknown(reply: str, in_tmp: Path) -> None:
    with MisbehavingSmtpServer(data_reply=reply) as server:
        error = _failure(server.env())
    assert error.step == "data" and "unexpected reply" in str(error), str(error)
    _assert_classified(error, UNKNOWN)
    assert server.payloads_received == 1


# --- a 250 that comes too late, through the CLI --------------------------------------------------


LATE_TIMEOUT = 2  # SMTP_TIMEOUT_SECONDS while the server holds its 250


def _assert_failed_with_intent_kept(
    fdb: Database[Any], workspace_id: ObjectId, run_output: str, workspace: dict[str, Any]
) -> None:
    assert workspace["outcome"] == "failed", workspace
    assert workspace["reason"].endswith(f"; {MAY_DUPLICATE}."), workspace["reason"]
    [log] = list(fdb.export_logs.find())
    assert log["status"] == "failed" and log["outcome_unknown"] is True, log
    assert log["error_message"] == workspace["reason"]
    state = fdb.export_state.find_one({"_id": str(workspace_id)})
    assert state is not None and state["in_flight"] is not None, "the intent stays: the server may have the mail"
    assert state["in_flight"]["log_id"] == log["_id"], state["in_flight"]
    assert run_output.count(MAY_DUPLICATE) >= 1


def _assert_redelivered_and_flagged(
    fdb: Database[Any],
    env: Env,
    run: Run,
    smtp: LocalSmtpServer,
    tmp_path: Path,
    workspace_id: ObjectId,
    name: str,
    address: dict[str, str],
    held: list[CapturedMessage],
    outputs: list[str],
) -> None:
    """New messages arrive; a run against a healthy server sends everything, flagged everywhere."""
    add_now(fdb, workspace_id, ["later-1", "later-2"])
    again = run(env(**address), "--json")
    outputs += [again.stdout, again.stderr]
    assert again.returncode == 0, again.stdout + again.stderr
    [workspace] = parse_json(again)["workspaces"]
    assert workspace["outcome"] == "completed" and workspace["possible_duplicate"] is True, workspace
    [mail] = smtp.messages
    assert POSSIBLE_DUPLICATE_SENTENCE in plain_body(mail.message())
    [completed] = list(fdb.export_logs.find({"status": "completed"}))
    assert completed["possible_duplicate"] is True
    state = fdb.export_state.find_one({"_id": str(workspace_id)})
    assert state is not None and state["in_flight"] is None and state["last_possible_duplicate_at"] is not None

    # Over the sequence every message is in some email, and every second copy is flagged.
    everything = {message["content"] for message in fdb.messages.find()}
    seen: set[str] = set()
    for captured in [*held, *smtp.messages]:
        flagged = POSSIBLE_DUPLICATE_SENTENCE in plain_body(captured.message())
        for text in delivered([captured]):
            assert text not in seen or flagged, f"{text} went out a second time without the flag"
            seen.add(text)
    assert seen == everything

    logs = run_cli(["logs"], env(**address), tmp_path)
    outputs += [logs.stdout, logs.stderr]
    assert logs.returncode == 0, logs.stdout + logs.stderr
    [line] = [line for line in logs.stdout.splitlines() if "completed" in line]
    assert "possible duplicate" in line, logs.stdout
    health = run_cli(["health", "--json"], env(**address), tmp_path)
    outputs += [health.stdout, health.stderr]
    duplicates = health_checks(health)["possible_duplicates"]
    assert duplicates["status"] == "warning" and name in duplicates["reason"], duplicates
    assert_no_secrets(*outputs, db=fdb, mails=[*held, *smtp.messages])


def test_a_250_after_the_deadline_keeps_the_intent_and_the_next_delivery_is_flagged(
    fdb: Database[Any], env: Env, run: Run, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    name = "Late Filter"
    workspace_id = seed_workspace(fdb, name, ["late-1", "late-2"])
    address = {f"WORKSPACE_{workspace_id}_EMAIL": TO}
    with SlowDataSmtpServer(hold_seconds=3 * LATE_TIMEOUT, username=SMTP_USER, password=SMTP_PASSWORD) as late:
        failed = run(env(late, SMTP_TIMEOUT_SECONDS=LATE_TIMEOUT, **address), "--json")
        held = list(late.messages)
    outputs = [failed.stdout, failed.stderr]
    assert failed.returncode == 1, failed.stdout + failed.stderr
    no_traceback(failed.stdout, failed.stderr)
    assert len(held) == 1, "the server queued the whole message before the deadline"
    assert POSSIBLE_DUPLICATE_SENTENCE not in plain_body(held[0].message())
    [workspace] = parse_json(failed)["workspaces"]
    assert "did not finish the message transaction" in workspace["reason"], workspace["reason"]
    _assert_failed_with_intent_kept(fdb, workspace_id, failed.stdout, workspace)
    _assert_redelivered_and_flagged(fdb, env, run, smtp, tmp_path, workspace_id, name, address, held, outputs)


def test_sigterm_while_awaiting_the_250_keeps_the_intent_and_the_next_delivery_is_flagged(
    fdb: Database[Any], env: Env, run: Run, smtp: LocalSmtpServer, tmp_path: Path
) -> None:
    name = "Stopped Filter"
    workspace_id = seed_workspace(fdb, name, ["term-1", "term-2"])
    address = {f"WORKSPACE_{workspace_id}_EMAIL": TO}
    bound = STOP_GRACE_SECONDS + 15
    with SlowDataSmtpServer(hold_seconds=30, username=SMTP_USER, password=SMTP_PASSWORD) as late:
        proc = start_cli(["export", "--json"], env(late, SMTP_TIMEOUT_SECONDS=60, **address), tmp_path)
        try:
            assert late.data_started.wait(60), "the message never reached the server"
            stdout, stderr, after_signal = stop_with_sigterm(proc, bound)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
        held = list(late.messages)
    print(f"export, SIGTERM while the server held its 250: ended {after_signal:.1f} s after it")
    outputs = [stdout, stderr]
    assert proc.returncode == 1, stdout + stderr
    no_traceback(stdout, stderr)
    assert len(held) == 1
    [workspace] = parse_json(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))["workspaces"]
    assert workspace["reason"].startswith("Stopped during the message transaction"), workspace["reason"]
    assert "asked to stop" in workspace["reason"], workspace["reason"]
    _assert_failed_with_intent_kept(fdb, workspace_id, stdout, workspace)
    _assert_redelivered_and_flagged(fdb, env, run, smtp, tmp_path, workspace_id, name, address, held, outputs)
