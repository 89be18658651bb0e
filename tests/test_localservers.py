"""The test harness itself: local MongoDB wire server and local SMTP server."""

from __future__ import annotations

import smtplib
import ssl
import stat
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
import trustme
from pymongo import MongoClient
from pymongo.database import Database

from seeding import add_chat, add_message, add_workspace, utcnow
from servers import (
    LocalMongoServer,
    LocalServerError,
    LocalSmtpServer,
    write_eml,
)

MESSAGE = b"From: a@wa-export.test\r\nTo: b@wa-export.test\r\nSubject: hi\r\n\r\nbody\r\n"


# --------------------------------------------------------------------- MongoDB


def test_mongo_ping_and_round_trip(mongo_db: Database[dict[str, Any]]) -> None:
    assert mongo_db.client.admin.command("ping")["ok"] == 1
    ws = add_workspace(mongo_db, "Acme")
    chat = add_chat(mongo_db, ws)
    when = utcnow()
    msg = add_message(mongo_db, chat, content="hallo", timestamp=when)
    doc = mongo_db.messages.find_one({"_id": msg})
    assert doc is not None
    assert doc["content"] == "hallo"
    assert doc["timestamp"] == when  # tz-aware, millisecond precision survives
    assert mongo_db.chats.find_one({"_id": chat})["workspace_id"] == ws  # type: ignore[index]


def test_mongo_kill_and_restart_keeps_data_and_port(tmp_path: Path) -> None:
    with LocalMongoServer(data_path=tmp_path / "db.sqlite3") as server:
        port, first_pid = server.port, server.pid
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri, serverSelectionTimeoutMS=5000)
        try:
            client.t.c.insert_one({"_id": 1, "v": "kept"})
            server.kill()
            assert server.pid is None
            assert not psutil.pid_exists(first_pid)  # type: ignore[arg-type]
            server.restart()
            assert server.port == port
            assert server.pid not in (None, first_pid)
            # The same client reconnects to the same address.
            assert client.t.c.find_one({"_id": 1}) == {"_id": 1, "v": "kept"}
        finally:
            client.close()


def test_mongo_stop_leaves_no_process() -> None:
    server = LocalMongoServer().start()
    pid = server.pid
    assert pid is not None and psutil.pid_exists(pid)
    server.stop()
    server.stop()  # idempotent
    assert server.pid is None
    assert not psutil.pid_exists(pid)
    assert pid not in {child.pid for child in psutil.Process().children(recursive=True)}


# ------------------------------------------------------------------------ SMTP


def _starttls_client(server: LocalSmtpServer, context: ssl.SSLContext) -> smtplib.SMTP:
    client = smtplib.SMTP(server.host, server.port, timeout=10)
    client.starttls(context=context)
    return client


def test_smtp_starttls_auth_captures_message(smtp_server: LocalSmtpServer) -> None:
    with _starttls_client(smtp_server, smtp_server.client_ssl_context()) as client:
        client.login("wa-export", "s3cret-pass")
        client.sendmail("a@wa-export.test", ["b@wa-export.test"], MESSAGE)
    [captured] = smtp_server.wait_for_messages(1)
    assert captured.mail_from == "a@wa-export.test"
    assert captured.rcpt_tos == ["b@wa-export.test"]
    assert captured.data == MESSAGE
    assert captured.message()["Subject"] == "hi"
    assert smtp_server.connection_count == 1
    assert smtp_server.auth_failures == 0


def test_smtp_ca_file_is_usable_as_cafile(smtp_server: LocalSmtpServer) -> None:
    context = ssl.create_default_context(cafile=str(smtp_server.ca_cert_path))
    with _starttls_client(smtp_server, context) as client:
        client.login("wa-export", "s3cret-pass")


def test_smtp_requires_tls_and_auth(smtp_server: LocalSmtpServer) -> None:
    with smtplib.SMTP(smtp_server.host, smtp_server.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")  # AUTH only after STARTTLS
        code, _ = client.mail("a@wa-export.test")
        assert code == 530


def test_smtp_wrong_password_rejected(smtp_server: LocalSmtpServer) -> None:
    with _starttls_client(smtp_server, smtp_server.client_ssl_context()) as client:
        with pytest.raises(smtplib.SMTPAuthenticationError) as excinfo:
            client.login("wa-export", "wrong")
    assert excinfo.value.smtp_code == 535
    assert smtp_server.auth_failures >= 1
    assert smtp_server.messages == []


def test_smtp_unknown_ca_fails_verification() -> None:
    signer, trusted = trustme.CA(), trustme.CA()
    with LocalSmtpServer(certificate_authority=signer) as server:
        context = ssl.create_default_context()
        trusted.configure_trust(context)
        with pytest.raises(ssl.SSLCertVerificationError):
            _starttls_client(server, context).close()


def test_smtp_refused_recipient_gets_550() -> None:
    refusing = LocalSmtpServer(refuse_recipients={"nobody@wa-export.test"})
    with refusing, _starttls_client(refusing, refusing.client_ssl_context()) as client:
        client.login("wa-export", "s3cret-pass")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as excinfo:
            client.sendmail("a@wa-export.test", ["nobody@wa-export.test"], MESSAGE)
        assert excinfo.value.recipients["nobody@wa-export.test"][0] == 550
        refused = client.sendmail("a@wa-export.test", ["b@wa-export.test", "nobody@wa-export.test"], MESSAGE)
        assert refused["nobody@wa-export.test"][0] == 550
        [captured] = refusing.wait_for_messages(1)
        assert captured.rcpt_tos == ["b@wa-export.test"]


def test_smtp_drop_connection_during_data() -> None:
    with LocalSmtpServer(drop_connection_during_data=True) as server:
        client = _starttls_client(server, server.client_ssl_context())
        try:
            client.login("wa-export", "s3cret-pass")
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.sendmail("a@wa-export.test", ["b@wa-export.test"], MESSAGE)
        finally:
            client.close()
        assert server.messages == []


@pytest.mark.parametrize("tls", ["ssl", "none"])
def test_smtp_implicit_tls_and_plain_modes(tls: str) -> None:
    with LocalSmtpServer(tls=tls) as server:  # type: ignore[arg-type]
        client: smtplib.SMTP
        if tls == "ssl":
            client = smtplib.SMTP_SSL(server.host, server.port, context=server.client_ssl_context(), timeout=10)
        else:
            client = smtplib.SMTP(server.host, server.port, timeout=10)
        with client:
            client.login("wa-export", "s3cret-pass")
            client.sendmail("a@wa-export.test", ["b@wa-export.test"], MESSAGE)
        assert server.wait_for_messages(1)[0].data == MESSAGE


def test_smtp_eml_dir_files_are_private(tmp_path: Path) -> None:
    eml_dir = tmp_path / "mail"
    with LocalSmtpServer(eml_dir=eml_dir) as server:
        with _starttls_client(server, server.client_ssl_context()) as client:
            client.login("wa-export", "s3cret-pass")
            client.sendmail("a@wa-export.test", ["b@wa-export.test"], MESSAGE)
            client.sendmail("a@wa-export.test", ["b@wa-export.test"], MESSAGE)
        server.wait_for_messages(2)
    files = sorted(eml_dir.iterdir())
    assert [f.name for f in files] == ["001.eml", "002.eml"]
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes() == MESSAGE
    assert write_eml(eml_dir, b"x").name == "003.eml"


def test_smtp_wait_for_messages_times_out(smtp_server: LocalSmtpServer) -> None:
    with pytest.raises(TimeoutError):
        smtp_server.wait_for_messages(1, timeout=0.2)


def test_smtp_stop_leaves_no_thread_even_with_idle_client() -> None:
    before = set(threading.enumerate())
    server = LocalSmtpServer(tls="ssl").start()
    idle = smtplib.SMTP_SSL(server.host, server.port, context=server.client_ssl_context(), timeout=10)
    try:
        server.stop()
        server.stop()  # idempotent
    finally:
        idle.close()
    assert set(threading.enumerate()) <= before


def test_mongo_start_failure_reports_log_tail() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalMongoServer(port=taken.getsockname()[1], startup_timeout=20)
        with pytest.raises(LocalServerError, match="(?i)address already in use|errno"):
            server.start()
        assert server.pid is None
        server.stop()


def test_smtp_explicit_port_in_use_raises() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalSmtpServer(port=taken.getsockname()[1])
        with pytest.raises(LocalServerError):
            server.start()
        server.stop()
