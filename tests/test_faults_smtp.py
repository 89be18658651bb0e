"""SMTP faults lose nothing and send nothing twice.

Every test runs the installed `wa-export export` against an authenticated
MongoDB (a password in MONGODB_URI) and an SMTP server with a distinctive
password, and checks that neither password appears in any output, log
document or mail.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trustme
from pymongo.database import Database

from faultkit import (
    SMTP_PASSWORD,
    SMTP_USER,
    WRONG_SMTP_PASSWORD,
    Env,
    Run,
    add_now,
    assert_no_secrets,
    delivered,
    first_arrival,
    last_arrival,
    no_traceback,
)
from helpers import cursor_of
from seeding import seed_workspace
from servers import LocalSmtpServer, free_port


class RecordingSmtpServer(LocalSmtpServer):
    """A LocalSmtpServer that records every SMTP command verb and whether TLS was on at the time."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.commands: list[tuple[str, bool]] = []

    def _make_protocol(self) -> Any:
        protocol = super()._make_protocol()
        for verb, method in list(protocol._smtp_methods.items()):
            protocol._smtp_methods[verb] = self._recording(protocol, verb, method)
        return protocol

    def _recording(self, protocol: Any, verb: str, method: Any) -> Any:
        async def record(arg: Any) -> Any:
            self.commands.append((verb, bool(protocol._tls_protocol)))
            return await method(arg)

        return record

    def verbs(self) -> set[str]:
        return {verb for verb, _ in self.commands}


def _recover_and_check(
    fdb: Database[Any],
    env: Env,
    run: Run,
    smtp: LocalSmtpServer,
    workspace_id: Any,
    address: dict[str, str],
    first: list[str],
    failed_cursor: Any,
    outputs: list[str],
) -> None:
    """After the fault: new messages arrive, a healthy run delivers old + new exactly once."""
    add_now(fdb, workspace_id, ["after-1", "after-2"])
    recovered = run(env(**address))
    outputs += [recovered.stdout, recovered.stderr]
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert len(smtp.messages) == 1, "the failed window and the new messages go out in one email"
    assert sorted(delivered(smtp.messages)) == sorted([*first, "after-1", "after-2"])
    assert fdb.export_logs.count_documents({"status": "completed"}) == 1
    assert fdb.export_logs.find_one({"status": "completed"})["message_count"] == len(first) + 2
    # The cursor passed everything delivered, so nothing of it can go out again.
    assert cursor_of(fdb, workspace_id) > last_arrival(fdb)
    assert cursor_of(fdb, workspace_id) > failed_cursor
    assert_no_secrets(*outputs, db=fdb, mails=smtp.messages)


# --- a failed send keeps the window -------------------------------------------------------


FAULTS = ["connection_refused", "auth_refused", "dropped_during_data", "one_recipient_refused"]


@pytest.mark.parametrize("fault", FAULTS)
def test_smtp_fault_keeps_window_and_next_run_delivers_once(fault, fdb, env, run, smtp, tmp_path):
    first = ["before-1", "before-2", "before-3"]
    workspace_id = seed_workspace(fdb, f"Smtp Fault {fault}", first)
    good, bad = "ops@fault.test", "gone@fault.test"
    address = {f"WORKSPACE_{workspace_id}_EMAIL": f"{good},{bad}"}

    faulty: LocalSmtpServer | None = None
    try:
        if fault == "connection_refused":
            fault_env = env(SMTP_PORT=str(free_port()), **address)
        elif fault == "auth_refused":
            fault_env = env(SMTP_PASSWORD=WRONG_SMTP_PASSWORD, **address)
        elif fault == "dropped_during_data":
            faulty = LocalSmtpServer(
                username=SMTP_USER, password=SMTP_PASSWORD, drop_connection_during_data=True
            ).start()
            fault_env = env(faulty, **address)
        else:
            faulty = LocalSmtpServer(username=SMTP_USER, password=SMTP_PASSWORD, refuse_recipients=[bad]).start()
            fault_env = env(faulty, **address)

        failed = run(fault_env)
        outputs = [failed.stdout, failed.stderr]
        assert failed.returncode == 1, failed.stdout + failed.stderr
        no_traceback(failed.stdout, failed.stderr)
        assert smtp.messages == []
        if faulty is not None:
            assert faulty.messages == [], "nothing may be delivered to anyone on a failed export"
        [log] = list(fdb.export_logs.find())
        assert log["status"] == "failed"
        reason = log["error_message"]
        assert reason and str(workspace_id) in failed.stdout
        expected_words = {
            "connection_refused": ["connect", str(fault_env["SMTP_PORT"])],
            "auth_refused": ["SMTP_PASSWORD"],
            "dropped_during_data": ["connection", "lost"],
            "one_recipient_refused": [bad, "nobody"],
        }[fault]
        for word in expected_words:
            assert word.lower() in reason.lower(), reason
        if fault == "one_recipient_refused":
            assert good not in reason.replace(log["email_sent_to"], "")  # only the refused address is blamed
        if fault == "auth_refused":
            assert smtp.auth_failures >= 1 and smtp.auth_successes == 0
        assert log["file_path"] and Path(log["file_path"]).is_file(), "the failed window's file is kept"
        failed_cursor = cursor_of(fdb, workspace_id)
        assert failed_cursor is not None and failed_cursor <= first_arrival(fdb), (
            "the cursor must not pass the undelivered messages"
        )
    finally:
        if faulty is not None:
            outputs_faulty = list(faulty.messages)
            faulty.stop()
            assert_no_secrets(mails=outputs_faulty)

    _recover_and_check(fdb, env, run, smtp, workspace_id, address, first, failed_cursor, outputs)
    assert sorted(smtp.messages[0].rcpt_tos) == sorted([good, bad])


# --- an untrusted certificate ------------------------------------------------------------


def test_untrusted_certificate_is_refused_without_plaintext_fallback(fdb, env, run, smtp, tmp_path):
    first = ["secret-1", "secret-2"]
    workspace_id = seed_workspace(fdb, "Unknown CA", first)
    address = {f"WORKSPACE_{workspace_id}_EMAIL": "ops@ca.test"}
    private_ca = trustme.CA()
    server = RecordingSmtpServer(username=SMTP_USER, password=SMTP_PASSWORD, certificate_authority=private_ca)
    server.start()
    outputs: list[str] = []
    try:
        # SMTP_CA_FILE trusts some other CA (the healthy server's), not the one that signed this server.
        refused = run(env(server, SMTP_CA_FILE=str(smtp.ca_cert_path), **address))
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 1, refused.stdout + refused.stderr
        no_traceback(refused.stdout, refused.stderr)
        [log] = list(fdb.export_logs.find())
        assert log["status"] == "failed"
        assert "certificate" in log["error_message"] and "SMTP_CA_FILE" in log["error_message"], log["error_message"]
        # The client stopped at STARTTLS: no AUTH (the password never travelled) and no MAIL, in clear or otherwise.
        assert "STARTTLS" in server.verbs()
        assert not {"AUTH", "MAIL", "RCPT", "DATA"} & server.verbs(), server.commands
        assert server.auth_failures == server.auth_successes == 0
        assert server.messages == []
        failed_cursor = cursor_of(fdb, workspace_id)

        # Without any SMTP_CA_FILE (system CAs only) it is refused just the same.
        system_only = run(env(server, SMTP_CA_FILE=None, **address))
        outputs += [system_only.stdout, system_only.stderr]
        assert system_only.returncode == 1, system_only.stdout + system_only.stderr
        assert not {"AUTH", "MAIL"} & server.verbs()

        # Trusting that CA: delivered, everything once.
        add_now(fdb, workspace_id, ["after-1"])
        trusted = run(env(server, SMTP_CA_FILE=str(server.ca_cert_path), **address))
        outputs += [trusted.stdout, trusted.stderr]
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        assert len(server.messages) == 1
        assert sorted(delivered(server.messages)) == sorted([*first, "after-1"])
        # Every AUTH and MAIL happened inside TLS.
        assert all(tls for verb, tls in server.commands if verb in {"AUTH", "MAIL", "RCPT", "DATA"})
        assert fdb.export_logs.count_documents({"status": "completed"}) == 1
        assert cursor_of(fdb, workspace_id) > failed_cursor
        assert_no_secrets(*outputs, db=fdb, mails=server.messages)
    finally:
        server.stop()
