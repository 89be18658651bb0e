"""Hangs and stops: every SMTP step ends within SMTP_TIMEOUT_SECONDS, a stalled transaction
ends the run's sending, SIGTERM cuts a send short, and an echoed AUTH blob never leaks.

Each test runs the installed `wa-export` against a real misbehaving SMTP server on
127.0.0.1 (tests/smtp_misbehaving.py) and, for `export` and `health`, the
authenticated MongoDB of faultkit.py. Elapsed times are measured from outside
the process and only bound a hang (3 x SMTP_TIMEOUT_SECONDS + 15 s): they are
not speed assertions.
"""

from __future__ import annotations

import base64
import contextlib
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from faultkit import (
    SMTP_PASSWORD,
    SMTP_USER,
    WRONG_SMTP_PASSWORD,
    add_now,
    assert_no_secrets,
    delivered,
    no_traceback,
)
from helpers import cursor_of, parse_json, stop_with_sigterm
from inprocess_cli import run_wa_export
from seeding import add_workspace, run_cli, seed_workspace, start_cli
from smtp_misbehaving import MisbehavingSmtpServer, Point
from wa_export.demo.servers import free_port
from wa_export.mail import transport
from wa_export.mail.errors import MailError
from wa_export.mail.message import OutgoingMail
from wa_export.mail.transport import STOP_GRACE_SECONDS, MailSender
from wa_export.settings import load_settings

TIMEOUT = 3  # SMTP_TIMEOUT_SECONDS in these tests
HANG_BOUND = 3 * TIMEOUT + 15  # seconds: "ends within about 3 x SMTP_TIMEOUT_SECONDS", generously


def _timed(
    args: list[str], env: dict[str, str], cwd: Path, bound: float
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run the CLI; fail (instead of hanging) if it is still running after `bound` seconds."""
    started = time.monotonic()
    try:
        result = run_cli(args, env, cwd, timeout=bound)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"wa-export {' '.join(args)} was still running after {bound} s") from None
    return result, time.monotonic() - started


def _first_message_time(db: Database[Any]) -> Any:
    """The first message's arrival key: a cursor at or below it has delivered nothing yet."""
    first = db.messages.find_one({}, sort=[("_id", 1)])
    assert first is not None
    return first["_id"]


def _unmoved(position: Any, first_key: Any) -> bool:
    return position is None or position <= first_key


def _no_lease_held(db: Database[Any]) -> bool:
    return db.export_state.count_documents({"lease_owner": {"$ne": None}}) == 0


# --- every step has an overall deadline ----------------------------------------------------------


EXPORT_POINTS: list[Point] = ["greeting", "ehlo", "data"]


@pytest.mark.parametrize("point", EXPORT_POINTS)
def test_export_against_a_trickling_server_ends_within_the_bound(point, fdb, env, tmp_path):
    contents = ["trickle-1", "trickle-2"]
    workspace_id = seed_workspace(fdb, f"Trickle {point}", contents)
    with MisbehavingSmtpServer(point, "trickle", interval=1.0) as server:
        run_env = env(SMTP_TIMEOUT_SECONDS=TIMEOUT, **server.env(), **{f"WORKSPACE_{workspace_id}_EMAIL": "ops@t.test"})
        result, elapsed = _timed(["export", "--json"], run_env, tmp_path, HANG_BOUND)
    print(f"export, server trickling after {point}, SMTP_TIMEOUT_SECONDS={TIMEOUT}: {elapsed:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    no_traceback(result.stdout, result.stderr)
    [outcome] = parse_json(result)["workspaces"]
    assert outcome["outcome"] == "failed"
    reason = outcome["reason"]
    what = "the message transaction" if point == "data" else "the session setup"
    assert f"did not finish {what}" in reason and f"within SMTP_TIMEOUT_SECONDS ({TIMEOUT} s)" in reason, reason
    [misbehaviour] = server.misbehaviours
    assert misbehaviour.client_left_after is not None, "wa-export never hung up on the trickling server"
    assert server.messages == []
    [log] = list(fdb.export_logs.find())
    assert log["status"] == "failed" and log["error_message"] == reason
    assert _unmoved(cursor_of(fdb, workspace_id), _first_message_time(fdb)), "the undelivered window must stay"
    assert _no_lease_held(fdb)
    assert_no_secrets(result.stdout, result.stderr, db=fdb)


@pytest.mark.parametrize("point", EXPORT_POINTS)
def test_test_email_against_a_trickling_server_ends_within_the_bound(point, env, tmp_path):
    with MisbehavingSmtpServer(point, "trickle", interval=1.0) as server:
        run_env = env(SMTP_TIMEOUT_SECONDS=TIMEOUT, **server.env())
        result, elapsed = _timed(["test-email", "--to", "ops@t.test", "--json"], run_env, tmp_path, HANG_BOUND)
    print(f"test-email, server trickling after {point}, SMTP_TIMEOUT_SECONDS={TIMEOUT}: {elapsed:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    document = parse_json(result)
    assert document["step"] == ("timeout" if point == "data" else "connect"), document
    waited_for = {
        "greeting": "the server's greeting",
        "ehlo": "the reply to EHLO",
        "data": "the server's reply to the message",
    }[point]
    assert f"timed out waiting for {waited_for}" in document["error"], document["error"]
    assert server.messages == [] and server.misbehaviours[0].client_left_after is not None


@pytest.mark.parametrize("point", ["greeting", "ehlo", "auth"])
def test_health_smtp_login_against_a_trickling_server_ends_within_the_bound(point, env, fdb, tmp_path):
    add_workspace(fdb, "Acme")  # health reads the platform's database: it refuses one without workspaces
    options: dict[str, Any] = {}
    if point == "auth":
        options = {"auth_mechanisms": ("PLAIN",), "username": SMTP_USER, "password": SMTP_PASSWORD}
    with MisbehavingSmtpServer(point, "trickle", interval=1.0, **options) as server:
        run_env = env(SMTP_TIMEOUT_SECONDS=TIMEOUT, **server.env())
        result, elapsed = _timed(["health", "--smtp-login", "--json"], run_env, tmp_path, HANG_BOUND)
    print(f"health --smtp-login, server trickling after {point}, SMTP_TIMEOUT_SECONDS={TIMEOUT}: {elapsed:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    [login] = [check for check in parse_json(result)["checks"] if check["name"] == "smtp_login"]
    assert login["status"] == "failed"
    assert "did not finish the session setup" in login["reason"], login["reason"]
    assert login["details"]["step"] == ("auth" if point == "auth" else "connect")
    assert server.misbehaviours[0].client_left_after is not None


# --- a stalled transaction costs one timeout per run ---------------------------------------------


def test_stall_after_data_costs_one_timeout_and_the_rest_is_not_attempted(fdb, env, run, smtp, tmp_path):
    addresses: dict[str, str] = {}
    contents: dict[Any, list[str]] = {}
    for number in range(3):
        texts = [f"stall{number}-m{index}" for index in range(2)]
        workspace_id = seed_workspace(fdb, f"Stall {number}", texts)
        addresses[f"WORKSPACE_{workspace_id}_EMAIL"] = f"ws{number}@stall.test"
        contents[workspace_id] = texts
    first_times = {workspace_id: _first_message_time(fdb) for workspace_id in contents}
    with MisbehavingSmtpServer("data", "stall") as server:
        run_env = env(SMTP_TIMEOUT_SECONDS=TIMEOUT, **server.env(), **addresses)
        result, elapsed = _timed(["export", "--json"], run_env, tmp_path, HANG_BOUND)
    print(f"export of 3 workspaces, server stalling after DATA, SMTP_TIMEOUT_SECONDS={TIMEOUT}: {elapsed:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    no_traceback(result.stdout, result.stderr)
    assert server.payloads_received == 1, "only the first workspace's message may be handed to the stalled server"
    assert server.connections == 1
    outcomes = parse_json(result)["workspaces"]
    assert [outcome["outcome"] for outcome in outcomes] == ["failed"] * 3
    timed_out, *skipped = outcomes
    assert "did not finish the message transaction" in timed_out["reason"]
    assert "may have accepted the message" in timed_out["reason"], "the operator must learn it may arrive twice"
    for outcome in skipped:
        assert outcome["reason"].startswith("not attempted:"), outcome["reason"]
        assert outcome["message_count"] == 2, "a workspace not attempted still says how many messages wait"
    assert fdb.export_logs.count_documents({"status": "failed"}) == 3
    for workspace_id in contents:
        assert _unmoved(cursor_of(fdb, workspace_id), min(first_times.values())), "every window stays for the next run"
    assert _no_lease_held(fdb)

    # The next run, against a healthy server, delivers every workspace once.
    for workspace_id, texts in contents.items():
        add_now(fdb, workspace_id, [f"{texts[0]}-later"])
    recovered = run(env(**addresses))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert len(smtp.messages) == 3
    expected = sorted(text for texts in contents.values() for text in (*texts, f"{texts[0]}-later"))
    assert sorted(delivered(smtp.messages)) == expected
    assert_no_secrets(result.stdout, result.stderr, recovered.stdout, recovered.stderr, db=fdb, mails=smtp.messages)


def test_a_dropped_connection_fails_at_once_and_the_next_workspace_is_sent(fdb, env, tmp_path):
    """A hang-up is no timeout: it is reported as a lost connection without waiting, and not run-fatal."""
    addresses = {}
    for number in range(2):
        workspace_id = seed_workspace(fdb, f"Drop {number}", [f"drop{number}-m0"])
        addresses[f"WORKSPACE_{workspace_id}_EMAIL"] = f"ws{number}@drop.test"
    long_timeout = 60
    with MisbehavingSmtpServer("data", "drop", times=1) as server:
        run_env = env(SMTP_TIMEOUT_SECONDS=long_timeout, **server.env(), **addresses)
        result, elapsed = _timed(["export", "--json"], run_env, tmp_path, long_timeout / 2)
    print(f"export of 2 workspaces, first DATA dropped, SMTP_TIMEOUT_SECONDS={long_timeout}: {elapsed:.1f} s")
    assert result.returncode == 1, result.stdout + result.stderr
    first, second = parse_json(result)["workspaces"]
    assert first["outcome"] == "failed" and "connection" in first["reason"] and "lost" in first["reason"]
    assert "did not finish" not in first["reason"], first["reason"]
    assert second["outcome"] == "completed", second
    assert len(server.messages) == 1 and server.connections == 2


# --- SIGTERM cuts the send in flight short -------------------------------------------------------


def test_sigterm_while_the_server_holds_data_ends_the_run_within_the_grace(fdb, env, tmp_path):
    """With SMTP_TIMEOUT_SECONDS=60 a stalled DATA would hold the run for a minute; SIGTERM ends it in seconds."""
    addresses = {}
    workspace_ids = []
    for number in range(2):
        workspace_id = seed_workspace(fdb, f"Term {number}", [f"term{number}-m0", f"term{number}-m1"])
        addresses[f"WORKSPACE_{workspace_id}_EMAIL"] = f"ws{number}@term.test"
        workspace_ids.append(workspace_id)
    first_message = _first_message_time(fdb)
    bound = STOP_GRACE_SECONDS + 15
    with MisbehavingSmtpServer("data", "stall") as server:
        run_env = env(SMTP_TIMEOUT_SECONDS=60, **server.env(), **addresses)
        proc = start_cli(["export", "--json"], run_env, tmp_path)
        try:
            give_up = time.monotonic() + 60
            while server.payloads_received == 0:  # the server now holds the first workspace's DATA
                assert proc.poll() is None, "wa-export ended before its message reached the server"
                assert time.monotonic() < give_up, "the message never reached the server"
                time.sleep(0.05)
            stdout, stderr, after_signal = stop_with_sigterm(proc, bound)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    print(f"export, SIGTERM while the server held DATA, SMTP_TIMEOUT_SECONDS=60: ended {after_signal:.1f} s after it")
    assert proc.returncode == 1, stdout + stderr
    no_traceback(stdout, stderr)
    document = parse_json(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    assert document["interrupted"] is True
    [in_flight] = document["workspaces"]  # the second workspace was never started
    assert in_flight["outcome"] == "failed" and "asked to stop" in in_flight["reason"], in_flight
    assert server.payloads_received == 1 and server.messages == []
    for workspace_id in workspace_ids:
        assert _unmoved(cursor_of(fdb, workspace_id), first_message)
    assert _no_lease_held(fdb), "the lease of the workspace in flight is released"
    event = fdb.system_logs.find_one({"kind": "export_run"})
    assert event is not None and event["interrupted"] is True
    assert_no_secrets(stdout, stderr, db=fdb)


# --- an echoed AUTH blob never leaks -------------------------------------------------------------


def _auth_forms(user: str, password: str) -> set[str]:
    encoded = [base64.b64encode(text.encode()).decode() for text in (f"\0{user}\0{password}", password)]
    return {form for blob in encoded for form in (blob, blob.rstrip("="))}


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("padding", [True, False], ids=["padded", "unpadded"])
def test_a_server_echoing_the_auth_blob_leaks_nothing(mechanism, padding, fdb, env, tmp_path):
    leaked_forms = _auth_forms(SMTP_USER, WRONG_SMTP_PASSWORD)
    assert any(form.endswith("=") for form in leaked_forms), "test setup: the password's base64 must be padded"
    workspace_id = seed_workspace(fdb, f"Echo {mechanism}", ["echo-1"])
    with MisbehavingSmtpServer(
        auth_mechanisms=(mechanism,),
        username=SMTP_USER,
        password=SMTP_PASSWORD,
        echo_auth_blob=True,
        echo_without_padding=not padding,
    ) as server:
        run_env = env(
            **{**server.env(), "SMTP_PASSWORD": WRONG_SMTP_PASSWORD, f"WORKSPACE_{workspace_id}_EMAIL": "ops@echo.test"}
        )
        exported = run_wa_export(["export"], run_env, tmp_path, timeout=60)
        tested = run_wa_export(["test-email", "--to", "ops@echo.test", "--json"], run_env, tmp_path, timeout=60)
        health = run_wa_export(["health", "--smtp-login"], run_env, tmp_path, timeout=60)
    assert "AUTH" in server.commands
    for result in (exported, tested, health):
        assert result.returncode == 1, result.stdout + result.stderr
    [log] = list(fdb.export_logs.find())
    # The refusal itself is reported, with the echoed part masked.
    assert "535 5.7.8 Authentication credentials invalid: ***" in log["error_message"], log["error_message"]
    texts = [
        exported.stdout,
        exported.stderr,
        tested.stdout,
        tested.stderr,
        health.stdout,
        health.stderr,
        repr(list(fdb.export_logs.find())),
        repr(list(fdb.system_logs.find())),
    ]
    for text in texts:
        for form in leaked_forms:
            assert form not in text, f"the AUTH blob {form!r} leaked"
    assert_no_secrets(*texts[:6], db=fdb)


def test_a_short_password_does_not_garble_ordinary_words(env, tmp_path):
    """SMTP_PASSWORD=on must not turn "Connection" into "C***necti***"; the password itself is still masked."""
    port = free_port()  # nothing listens: the error text has "Connection" in it
    result = run_wa_export(
        ["test-email", "--to", "ops@short.test"],
        env(SMTP_PORT=port, SMTP_PASSWORD="on", SMTP_SECURITY="none", SMTP_CA_FILE=None),
        tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"Cannot connect to SMTP server 127.0.0.1:{port} (Connection refused)" in result.stderr, result.stderr
    assert "***" not in result.stderr


# --- the deadline reaches through TLS ------------------------------------------------------------


@pytest.mark.parametrize(
    ("security", "point", "waited_for"),
    [
        ("starttls", "starttls", "the reply to STARTTLS and the TLS handshake"),
        ("ssl", "greeting", "the TLS handshake and the greeting"),
    ],
)
def test_a_stalled_tls_handshake_ends_at_the_deadline(security, point, waited_for, tmp_path, monkeypatch):
    """TLS replaces the socket object mid-session; the deadline must still reach the connection."""
    monkeypatch.chdir(tmp_path)
    with MisbehavingSmtpServer(point, "stall") as server:
        settings = load_settings(
            environ={
                "SMTP_SERVER": server.host,
                "SMTP_PORT": str(server.port),
                "SMTP_SECURITY": security,
                "SMTP_FROM": "exports@tls.test",
                "SMTP_TIMEOUT_SECONDS": "1",
            }
        )
        started = time.monotonic()
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.verify_login()
        elapsed = time.monotonic() - started
    assert elapsed < 3 * 1 + 15, f"verify_login took {elapsed:.1f} s"
    assert caught.value.step == "tls"
    assert f"within SMTP_TIMEOUT_SECONDS (1 s): timed out waiting for {waited_for}" in str(caught.value)
    [misbehaviour] = server.misbehaviours
    assert misbehaviour.client_left_after is not None, "the client never hung up"


@pytest.mark.parametrize("security", ["starttls", "ssl"])
def test_a_reply_trickling_over_tls_is_cut_at_the_deadline(security, tmp_path, monkeypatch):
    """Over TLS the socket smtplib reads is a wrapper of the one first connected; the cut must reach it."""
    monkeypatch.chdir(tmp_path)
    with MisbehavingSmtpServer("data", "trickle", interval=0.3, tls=security, max_misbehave_seconds=30) as server:
        settings = load_settings(environ={**server.env(), "SMTP_FROM": "exports@tls.test", "SMTP_TIMEOUT_SECONDS": "2"})
        started = time.monotonic()
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@tls.test",), subject="s", body="b"))
        elapsed = time.monotonic() - started
    assert elapsed < 3 * 2 + 15, f"send took {elapsed:.1f} s (the server gives up trickling after 30 s)"
    assert caught.value.step == "timeout", caught.value
    assert "timed out waiting for the server's reply to the message" in str(caught.value)
    assert server.payloads_received == 1 and server.messages == []
    assert server.misbehaviours[0].client_left_after is not None


def _black_hole() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback port whose accept queue is full: a further TCP connect waits, as behind a firewall dropping SYNs."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(listener.getsockname())
        fillers.append(filler)
    time.sleep(0.3)
    return listener, fillers


def _login_to(host: str, port: int, timeout: int) -> tuple[MailError, float]:
    settings = load_settings(
        environ={"SMTP_SERVER": host, "SMTP_PORT": str(port), "SMTP_SECURITY": "none", "SMTP_FROM": "e@hole.test"}
        | {"SMTP_TIMEOUT_SECONDS": str(timeout)}
    )
    started = time.monotonic()
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.verify_login()
    return caught.value, time.monotonic() - started


def test_a_stop_during_a_hanging_tcp_connect_ends_it_within_the_grace():
    listener, fillers = _black_hole()
    with listener, contextlib.ExitStack() as closing:
        for filler in fillers:
            closing.enter_context(filler)
        stopper = threading.Timer(1.0, transport.stop_sends)
        stopper.start()
        try:
            error, elapsed = _login_to(*listener.getsockname(), timeout=30)
        finally:
            stopper.cancel()
            transport.clear_stop()
    assert error.step == "stopped" and "waiting for the TCP connection" in str(error), error
    assert elapsed < 1.0 + STOP_GRACE_SECONDS + 3, f"stopped after {elapsed:.1f} s; the grace is {STOP_GRACE_SECONDS} s"


def test_a_host_with_several_hanging_addresses_gets_one_timeout_in_all(monkeypatch):
    holes = [_black_hole(), _black_hole()]
    ports = [listener.getsockname()[1] for listener, _ in holes]
    real_getaddrinfo = socket.getaddrinfo

    def two_addresses(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        if host != "mx.two-addresses.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", hole)) for hole in ports]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    try:
        error, elapsed = _login_to("mx.two-addresses.test", 25, timeout=2)
    finally:
        for listener, fillers in holes:
            for sock in [listener, *fillers]:
                sock.close()
    assert error.step == "connect" and "within SMTP_TIMEOUT_SECONDS (2 s)" in str(error), error
    assert elapsed < 2 + 1.5, f"{elapsed:.1f} s: each address had its own timeout"


def test_an_interrupt_mid_transaction_drops_the_connection_without_quit(tmp_path, monkeypatch):
    """A QUIT sent while the server still reads the message would be taken as part of it, and never answered."""
    monkeypatch.chdir(tmp_path)
    with MisbehavingSmtpServer("data", "stall") as server:
        settings = load_settings(
            environ={**server.env(), "SMTP_FROM": "exports@quit.test", "SMTP_TIMEOUT_SECONDS": "20"}
        )
        interrupt = threading.Timer(1.0, signal.raise_signal, (signal.SIGINT,))
        started = time.monotonic()
        interrupt.start()
        with pytest.raises(KeyboardInterrupt), MailSender(settings) as sender:
            sender.send(OutgoingMail(to=("ops@quit.test",), subject="s", body="b"))
        elapsed = time.monotonic() - started
    assert elapsed < 1.0 + 5, f"the interrupted sender took {elapsed:.1f} s to let go (SMTP_TIMEOUT_SECONDS is 20)"
