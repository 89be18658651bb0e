"""wa_export.mail against a real aiosmtpd server (STARTTLS + AUTH) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import getpass
import os
import smtplib
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yagmail
import yagmail.password

import wa_export.mail.transport as transport_module
from servers import LocalSmtpServer, free_port
from wa_export.mail.errors import MailError
from wa_export.mail.message import (
    XLSX_MIME,
    OutgoingMail,
    build_message,
    encoded_attachment_size,
    from_header,
    single_line,
    single_line_or,
)
from wa_export.mail.transport import MailSender, tls_mode
from wa_export.settings import Settings, load_settings

PASSWORD = "s3cret-pass"
SENDER = "exports@example.com"
BODY = "Workspace: Acme\nWindow: 2024-05-01 10:00 UTC – 10:15 UTC\n\nreceived: 3\nsent_via_ai: 2\n  indented line = kept\n.leading dot\n"


def make_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: LocalSmtpServer | None = None, **overrides: str | None
) -> Settings:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env: dict[str, str | None] = {
        "SMTP_SERVER": "127.0.0.1",
        "SMTP_PORT": str(server.port if server else free_port()),
        "SMTP_USERNAME": "wa-export",
        "SMTP_PASSWORD": PASSWORD,
        "SMTP_FROM": SENDER,
        "SMTP_SECURITY": "starttls",
        "SMTP_CA_FILE": str(server.ca_cert_path) if server else None,
        "SMTP_TIMEOUT_SECONDS": "5",
        "EXPORT_DIR": str(tmp_path / "exports"),
    }
    env.update(overrides)
    return load_settings(environ={key: value for key, value in env.items() if value is not None})


@pytest.fixture
def server() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer() as smtp_server:
        yield smtp_server


@pytest.fixture
def xlsx(tmp_path: Path) -> Path:
    from openpyxl import Workbook

    workbook = Workbook()
    workbook.active.append(["Sender Phone Number", "Receiver Phone Number"])
    path = tmp_path / "acme_whatsapp_messages_2024-05-01_10-15.xlsx"
    workbook.save(path)
    return path


def plain_text(message: Any) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None and part.get_content_type() == "text/plain"
    return part.get_content().replace("\r\n", "\n")


def test_delivers_xlsx_with_exact_mime_and_intact_plain_body(
    server: LocalSmtpServer, xlsx: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server)
    with MailSender(settings) as sender:
        sender.send(
            OutgoingMail(
                to=("ops@example.com",),
                subject="WhatsApp Messages Export - Acme - 2024-05-01 10:15",
                body=BODY,
                attachment=xlsx,
            )
        )
    (captured,) = server.wait_for_messages(1, timeout=5)
    assert captured.mail_from == SENDER
    assert captured.rcpt_tos == ["ops@example.com"]
    message = captured.message()
    assert message["From"] == f"WhatsApp Exports <{SENDER}>" and message["To"] == "ops@example.com"
    assert message["Subject"] == "WhatsApp Messages Export - Acme - 2024-05-01 10:15"
    assert plain_text(message) == BODY  # verbatim: no <br>, no HTML rewrite, non-ASCII intact
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_content_type() == XLSX_MIME
    assert attachment.get_filename() == xlsx.name
    assert attachment.get_content() == xlsx.read_bytes()
    assert server.auth_successes == 1


def test_two_sends_share_one_connection(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server)
    with MailSender(settings) as sender:
        for number in (1, 2):
            sender.send(OutgoingMail(to=("ops@example.com",), subject=f"mail {number}", body="hello"))
        assert sender.connections_opened == 1
    server.wait_for_messages(2, timeout=5)
    assert server.connection_count == 1
    assert [m.message()["Subject"] for m in server.messages] == ["mail 1", "mail 2"]


def test_a_connection_that_just_answered_is_reused_without_a_noop(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Back-to-back emails cost no NOOP round trip each; an idle connection is still checked first."""
    noops: list[int] = []
    original_noop = smtplib.SMTP.noop

    def counting_noop(self: smtplib.SMTP) -> tuple[int, bytes]:
        noops.append(1)
        return original_noop(self)

    monkeypatch.setattr(smtplib.SMTP, "noop", counting_noop)
    settings = make_settings(monkeypatch, tmp_path, server)
    mail = OutgoingMail(to=("ops@example.com",), subject="s", body="b")
    with MailSender(settings) as sender:
        sender.send(mail)
        sender.send(mail)
        assert noops == []
        monkeypatch.setattr(transport_module, "RECENTLY_ANSWERED_SECONDS", 0.0)  # as if idle for a while
        sender.send(mail)
        assert noops == [1]
        assert sender.connections_opened == 1
    assert len(server.wait_for_messages(3, timeout=5)) == 3


def test_reconnects_once_when_the_server_dropped_the_idle_connection(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server)
    mail = OutgoingMail(to=("ops@example.com",), subject="s", body="b")
    with MailSender(settings) as sender:
        sender.send(mail)
        assert sender.smtp is not None
        # The connection dies between sends and NOOP does not notice in time: the
        # MAIL command fails before any data went out, so one retry is safe.
        sender.smtp.sock.shutdown(socket.SHUT_RDWR)
        monkeypatch.setattr(MailSender, "alive", lambda self: True)
        sender.send(mail)
        assert sender.connections_opened == 2
    assert len(server.wait_for_messages(2, timeout=5)) == 2
    assert server.connection_count == 2


def test_failed_transmission_raises_and_yagmail_send_is_never_used(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Stock yagmail's send() returns False once its retries are spent.

    We never call it: our _attempt_send is one transaction that raises on every
    failure, so a refused DATA is a MailError, never a silent False.
    """
    settings = make_settings(monkeypatch, tmp_path, server)

    def yagmail_send(self: Any, *args: Any, **kwargs: Any) -> bool:
        raise AssertionError("yagmail's send() (returns False on failure) must never be called")

    monkeypatch.setattr(yagmail.SMTP, "send", yagmail_send)
    monkeypatch.setattr(smtplib.SMTP, "data", lambda self, msg: (554, b"5.6.0 Message rejected"))
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    assert caught.value.step == "data" and "554 5.6.0 Message rejected" in str(caught.value)
    assert server.messages == []


def test_disconnect_is_not_retried_by_yagmail_logic(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The condition under which stock yagmail re-logs in, re-sends and returns False."""
    settings = make_settings(monkeypatch, tmp_path, server)
    calls: list[str] = []

    def data(self: smtplib.SMTP, msg: bytes) -> tuple[int, bytes]:
        calls.append("data")
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    monkeypatch.setattr(smtplib.SMTP, "data", data)
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    assert caught.value.step == "data"
    assert calls == ["data"]  # exactly one attempt: DATA may have been accepted
    assert server.connection_count == 1


def test_username_without_password_fails_fast_without_prompting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("keyring/getpass/input must never be used")

    class Keyring:
        get_password = staticmethod(forbidden)

    monkeypatch.setattr(yagmail.password, "keyring", Keyring)
    monkeypatch.setattr(getpass, "getpass", forbidden)
    monkeypatch.setattr("builtins.input", forbidden)
    monkeypatch.setattr(smtplib.SMTP, "connect", forbidden)
    settings = make_settings(monkeypatch, tmp_path, None, SMTP_PASSWORD=None)
    with MailSender(settings) as sender:
        with pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        assert caught.value.step == "config"
        assert "SMTP_PASSWORD" in str(caught.value)
        with pytest.raises(MailError):
            sender.verify_login()
        assert sender.connections_opened == 0


def test_username_without_password_never_hangs_with_closed_stdin(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from wa_export.settings import load_settings
        from wa_export.mail.errors import MailError
        from wa_export.mail.transport import MailSender
        from wa_export.mail.message import OutgoingMail
        settings = load_settings(environ={"SMTP_SERVER": "127.0.0.1", "SMTP_PORT": "9",
                                          "SMTP_USERNAME": "user@example.com"})
        try:
            with MailSender(settings) as sender:
                sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        except MailError as error:
            print("STEP", error.step)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "STEP config"
    assert "Password for" not in result.stdout + result.stderr


def test_body_equal_to_an_existing_path_is_sent_as_text(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET FILE CONTENT")
    settings = make_settings(monkeypatch, tmp_path, server)
    with MailSender(settings) as sender:
        sender.send(OutgoingMail(to=("ops@example.com",), subject=str(secret), body=str(secret)))
    (captured,) = server.wait_for_messages(1, timeout=5)
    message = captured.message()
    assert list(message.iter_attachments()) == []
    assert plain_text(message).strip() == str(secret)
    assert message["Subject"].strip() == str(secret)  # long single word: folded after "Subject:"
    assert b"TOP SECRET" not in captured.data


def test_untrusted_certificate_fails_without_plaintext_fallback(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server, SMTP_CA_FILE=None)  # system CAs only
    spied: list[str] = []
    monkeypatch.setattr(smtplib.SMTP, "login", lambda *a, **k: spied.append("login"))
    monkeypatch.setattr(smtplib.SMTP, "mail", lambda *a, **k: spied.append("mail"))
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    assert caught.value.step == "tls"
    assert "SMTP_CA_FILE" in str(caught.value) and "not trusted" in str(caught.value)
    assert spied == []
    assert server.auth_successes == server.auth_failures == 0
    assert server.messages == []
    assert server.connection_count == 1  # no second, plaintext attempt


def test_server_without_starttls_is_an_error_not_a_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with LocalSmtpServer(tls="none") as plain:
        settings = make_settings(monkeypatch, tmp_path, plain, SMTP_SECURITY="auto")
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        assert caught.value.step == "tls" and "STARTTLS" in str(caught.value)
        assert plain.auth_successes == plain.auth_failures == 0 and plain.messages == []


def test_ca_file_from_the_server_is_trusted_and_login_verifies(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server, SMTP_SECURITY="auto")
    assert tls_mode(settings) == "starttls"
    with MailSender(settings) as sender:
        sender.verify_login()
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        assert sender.connections_opened == 1
    assert server.auth_successes == 1 and len(server.wait_for_messages(1, timeout=5)) == 1


def test_wrong_password_is_an_auth_error_without_the_password(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = "Wr0ng-Pa55word-XYZ"
    settings = make_settings(monkeypatch, tmp_path, server, SMTP_PASSWORD=wrong)
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.verify_login()
    error = caught.value
    assert error.step == "auth"
    assert "app password" in str(error) and "wa-export" in str(error)
    for text in (str(error), repr(error), error.hint):
        assert wrong not in text
    assert server.auth_successes == 0 and server.auth_failures >= 1


def test_refused_recipient_fails_the_whole_mail(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    server.refuse_recipients = frozenset({"gone@example.com"})
    settings = make_settings(monkeypatch, tmp_path, server)
    with MailSender(settings) as sender:
        with pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com", "gone@example.com"), subject="s", body="b"))
        error = caught.value
        assert error.step == "recipient" and error.refused == ("gone@example.com",)
        assert "gone@example.com" in str(error) and "550" in str(error)
        assert "ops@example.com" not in str(error)
        assert server.messages == []  # all or nothing: no partial delivery to re-send later
        # The transaction was reset, the connection stays usable.
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    assert len(server.wait_for_messages(1, timeout=5)) == 1 and server.connection_count == 1


def test_closed_port_is_a_connect_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port()
    settings = make_settings(monkeypatch, tmp_path, None, SMTP_PORT=str(port))
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    assert caught.value.step == "connect"
    assert str(caught.value) == (
        f"Cannot connect to SMTP server 127.0.0.1:{port} (Connection refused); "
        "check SMTP_SERVER/SMTP_PORT and the firewall."
    )


def test_silent_server_times_out_as_a_connect_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as listener:  # accepts TCP (backlog) but never greets
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        settings = make_settings(
            monkeypatch, tmp_path, None, SMTP_PORT=str(listener.getsockname()[1]), SMTP_TIMEOUT_SECONDS="0.5"
        )
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.verify_login()
    assert caught.value.step == "connect" and "timed out" in str(caught.value)


def test_drop_during_data_is_a_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with LocalSmtpServer(drop_connection_during_data=True) as dropping:
        settings = make_settings(monkeypatch, tmp_path, dropping)
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        assert caught.value.step in ("data", "connect")
        assert dropping.messages == [] and dropping.connection_count == 1  # not resent


def test_domain_allow_list_is_checked_before_connecting(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server, EXPORT_ALLOWED_EMAIL_DOMAINS="example.com")
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=("ops@example.com", "leak@other.org"), subject="s", body="b"))
    assert caught.value.step == "domain" and caught.value.refused == ("leak@other.org",)
    assert "EXPORT_ALLOWED_EMAIL_DOMAINS" in str(caught.value)
    assert server.connection_count == 0


def test_attachment_over_the_limit_fails_before_connecting(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    big = tmp_path / "big.xlsx"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    settings = make_settings(monkeypatch, tmp_path, server, EXPORT_MAX_ATTACHMENT_MB="2")
    with MailSender(settings) as sender, pytest.raises(MailError) as caught:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b", attachment=big))
    assert caught.value.step == "size"
    assert str(caught.value).startswith(
        "The attachment is 4.1 MB once encoded for email, over EXPORT_MAX_ATTACHMENT_MB=2; the file (3.0 MB) is kept at"
    )
    assert str(big) in str(caught.value) and big.exists()
    assert server.connection_count == 0


def test_attachment_limit_counts_the_base64_encoded_size(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 1.6 MB file is a ~2.2 MB message: over a 2 MB limit, though the file is under it."""
    settings = make_settings(monkeypatch, tmp_path, server, EXPORT_MAX_ATTACHMENT_MB="2")
    under = tmp_path / "under.xlsx"
    under.write_bytes(os.urandom(1_400_000))  # 1.87 MB encoded: fits
    over = tmp_path / "over.xlsx"
    over.write_bytes(os.urandom(1_600_000))  # 1.53 MB on disk, 2.13 MB encoded: does not
    with MailSender(settings) as sender:
        with pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b", attachment=over))
        assert caught.value.step == "size"
        assert "is 2.1 MB once encoded for email, over EXPORT_MAX_ATTACHMENT_MB=2" in str(caught.value)
        assert server.connection_count == 0
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b", attachment=under))
    (captured,) = server.wait_for_messages(1, timeout=5)
    (attachment,) = list(captured.message().iter_attachments())
    assert attachment.get_content() == under.read_bytes()


def test_encoded_attachment_size_matches_the_real_encoding() -> None:
    """The size that decides parts is the size of the attachment in the message that is sent."""
    mail = OutgoingMail(to=("ops@example.com",), subject="s", body="b", attachment=Path("a.xlsx"))
    for size in (0, 1, 2, 3, 56, 57, 58, 1000, 123_457):
        raw = build_message(mail, SENDER, b"\xff" * size)
        (part,) = email.message_from_bytes(raw, policy=email.policy.default).iter_attachments()
        body = part.get_payload()  # as sent: base64 lines, each with its CRLF
        assert encoded_attachment_size(size) == len(body), size


def test_subject_with_crlf_cannot_inject_headers(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server)
    subject = "WhatsApp Messages Export - Evil\r\nBcc: attacker@example.com\r\n\r\nX - 2024-05-01 10:15"
    with MailSender(settings) as sender:
        sender.send(OutgoingMail(to=("ops@example.com",), subject=subject, body="b"))
    (captured,) = server.wait_for_messages(1, timeout=5)
    message = captured.message()
    assert captured.rcpt_tos == ["ops@example.com"]
    assert message["Bcc"] is None
    assert message["Subject"] == "WhatsApp Messages Export - Evil Bcc: attacker@example.com X - 2024-05-01 10:15"
    assert not any(line.lower().startswith(b"bcc:") for line in captured.data.splitlines())
    assert single_line("a\x00b\tc\u2028d") == "a b c d"


@pytest.mark.parametrize(
    ("name", "expected_raw", "expected_display"),
    [
        (None, f"From: WhatsApp Exports <{SENDER}>", "WhatsApp Exports"),  # the default
        ("", f"From: {SENDER}", ""),  # configured empty: the bare address
        ("Exporte Zürich", f"From: Exporte =?utf-8?q?Z=C3=BCrich?= <{SENDER}>", "Exporte Zürich"),
        ("Acme, Inc.", f'From: "Acme, Inc." <{SENDER}>', "Acme, Inc."),
        (
            "Evil\r\nBcc: attacker@example.com",
            f'From: "Evil Bcc: attacker@example.com" <{SENDER}>',
            "Evil Bcc: attacker@example.com",
        ),
    ],
)
def test_from_carries_the_display_name(
    server: LocalSmtpServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    name: str | None,
    expected_raw: str,
    expected_display: str,
) -> None:
    settings = make_settings(monkeypatch, tmp_path, server, SMTP_FROM_NAME=name)
    with MailSender(settings) as sender:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    (captured,) = server.wait_for_messages(1, timeout=5)
    assert captured.mail_from == SENDER  # the envelope sender is the bare address
    header_lines = captured.data.split(b"\r\n\r\n", 1)[0].decode("ascii").split("\r\n")
    assert [line for line in header_lines if line.startswith("From:")] == [expected_raw]
    assert not any(line.lower().startswith("bcc:") for line in header_lines)
    (address,) = captured.message()["From"].addresses
    assert address.addr_spec == SENDER and address.display_name == expected_display


def test_from_header_is_one_line_even_without_settings() -> None:
    # build_message is a library entry point too: it must not trust the name it is given.
    assert str(from_header(SENDER, "Ops\r\nBcc: x@example.com")) == f'"Ops Bcc: x@example.com" <{SENDER}>'
    assert from_header(SENDER, " \r\n ") == SENDER


def test_implicit_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, xlsx: Path) -> None:
    with LocalSmtpServer(tls="ssl") as tls_server:
        settings = make_settings(monkeypatch, tmp_path, tls_server, SMTP_SECURITY="ssl")
        with MailSender(settings) as sender:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body=BODY, attachment=xlsx))
        (captured,) = tls_server.wait_for_messages(1, timeout=5)
        assert plain_text(captured.message()) == BODY
        assert tls_server.auth_successes == 1


def test_implicit_tls_with_untrusted_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with LocalSmtpServer(tls="ssl") as tls_server:
        settings = make_settings(monkeypatch, tmp_path, tls_server, SMTP_SECURITY="ssl", SMTP_CA_FILE=None)
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        assert caught.value.step == "tls"
        assert tls_server.messages == []


def test_tls_mode_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert tls_mode(make_settings(monkeypatch, tmp_path, None, SMTP_SECURITY="auto", SMTP_PORT="465")) == "ssl"
    assert tls_mode(make_settings(monkeypatch, tmp_path, None, SMTP_SECURITY="auto", SMTP_PORT="25")) == "starttls"
    assert tls_mode(make_settings(monkeypatch, tmp_path, None, SMTP_SECURITY="none")) == "none"


def test_missing_server_or_sender_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for overrides in ({"SMTP_SERVER": None}, {"SMTP_USERNAME": None, "SMTP_PASSWORD": None, "SMTP_FROM": None}):
        settings = make_settings(monkeypatch, tmp_path, None, **overrides)
        with MailSender(settings) as sender, pytest.raises(MailError) as caught:
            sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
        assert caught.value.step == "config"


def test_yagmail_logger_prints_nothing(
    server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import logging

    settings = make_settings(monkeypatch, tmp_path, server)
    with MailSender(settings) as sender:
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body="b"))
    logger = logging.getLogger("yagmail.log")
    assert not any(
        isinstance(h, logging.StreamHandler)
        and not isinstance(h, logging.FileHandler)
        and getattr(h, "stream", None) is not None
        for h in logger.handlers
    )
    logger.error("would contain ops@example.com")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_close_never_raises(server: LocalSmtpServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = make_settings(monkeypatch, tmp_path, server)
    sender = MailSender(settings)
    sender.verify_login()
    assert sender.smtp is not None
    sender.smtp.sock.close()  # whatever state the socket is in
    monkeypatch.setattr(smtplib.SMTP, "quit", lambda self: (_ for _ in ()).throw(OSError("boom")))
    sender.__exit__(None, None, None)
    sender.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Acme\r\nBcc: attacker@example.com", "Acme Bcc: attacker@example.com"),
        ("  Acme   Co  ", "Acme Co"),
        ("   ", "65a1b2c3d4e5f60718293a4b"),
        ("\r\n\t\x00\x1b \u2028\x85", "65a1b2c3d4e5f60718293a4b"),
        ("", "65a1b2c3d4e5f60718293a4b"),
        (None, "65a1b2c3d4e5f60718293a4b"),
        ("🚀", "🚀"),
    ],
)
def test_single_line_or_falls_back_when_nothing_printable_is_left(name: object, expected: str) -> None:
    """A workspace name of only spaces/control characters must not give "Export -  - <date>"."""
    assert single_line_or(name, "65a1b2c3d4e5f60718293a4b") == expected


def _reference_message(mail: OutgoingMail, sender: str, sender_name: str, data: bytes | None) -> EmailMessage:
    """The same content built by the email package with its stock SMTP policy."""
    reference = EmailMessage(policy=email.policy.SMTP)
    reference["From"] = from_header(sender, sender_name)
    reference["To"] = ", ".join(mail.to)
    reference["Subject"] = single_line(mail.subject)
    reference.set_content(mail.body, subtype="plain", charset="utf-8")
    if mail.attachment is not None and data is not None:
        subtype = XLSX_MIME.split("/")[1] if mail.attachment.name.endswith(".xlsx") else "octet-stream"
        reference.add_attachment(
            data, maintype="application", subtype=subtype, filename=single_line(mail.attachment.name)
        )
    return email.message_from_bytes(reference.as_bytes(), policy=email.policy.default)  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("subject", "body", "sender_name", "filename", "to"),
    [
        (
            "WhatsApp Messages Export - Acme - 2024-05-01 10:15",
            BODY,
            "WhatsApp Exports",
            "acme_whatsapp.xlsx",
            ("ops@example.com",),
        ),
        (
            "WhatsApp Messages Export - Café Zürich 🚀 - 2024-05-01 10:15",
            "Grüße\n\nZeile – zwei\n",
            "Exporte Zürich",
            "cafe_zurich_whatsapp_messages_2024-05-01_10-15.xlsx",
            ("a@example.com", "b@example.org"),
        ),
        ("x" * 200 + " " + "y" * 90, "long " * 300, "Acme, Inc.", "a" * 90 + ".xlsx", ("ops@example.com",)),
        (
            "=?utf-8?q?Fake?= encoded word",
            "=?utf-8?q?x?= = =3D\r\nCR LF\rCR only\n.\n..dot\ntrailing   \n\ttab\t",
            "",
            'weird "name" \\ here.xlsx',
            ("ops@example.com",),
        ),
        ("no newline at the end", "no newline", "Ops\r\nBcc: x@example.com", "Zürich café.xlsx", ("ops@example.com",)),
        ("empty body", "", "WhatsApp Exports", "report.bin", ("ops@example.com",)),
        ("no attachment", "just text\n", "WhatsApp Exports", None, ("ops@example.com",)),
    ],
)
def test_message_reads_back_as_the_email_package_would_build_it(
    tmp_path: Path, subject: str, body: str, sender_name: str, filename: str | None, to: tuple[str, ...]
) -> None:
    """What is sent reads back as the stock EmailMessage of the same content, pure ASCII with short lines."""
    data = os.urandom(7_000) if filename is not None else None
    attachment = tmp_path / filename if filename is not None else None
    if attachment is not None and data is not None:
        attachment.write_bytes(data)
    mail = OutgoingMail(to=to, subject=subject, body=body, attachment=attachment)
    raw = build_message(mail, SENDER, data, sender_name=sender_name)
    ours = email.message_from_bytes(raw, policy=email.policy.default)
    if attachment is not None:  # the file is read when no bytes are given
        assert (
            email.message_from_bytes(build_message(mail, SENDER), policy=email.policy.default)
            .get_payload()[1]
            .get_content()
            == data
        )
    reference = _reference_message(mail, SENDER, sender_name, data)

    lines = raw.split(b"\r\n")
    assert raw.isascii() and b"\r\n" in raw and all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(len(line) <= 998 for line in lines)
    header_block = raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert all(len(line) <= 78 for line in header_block if not line.startswith(b"Content-Type: multipart"))
    assert not ours.defects and all(not part.defects for part in ours.walk())
    for header in ("From", "To", "Subject"):
        assert str(ours[header]) == str(reference[header]), header
    assert [(a.display_name, a.addr_spec) for a in ours["From"].addresses] == [
        (a.display_name, a.addr_spec) for a in reference["From"].addresses
    ]
    assert ours["Date"] is not None and ours["Message-ID"].endswith("@example.com>")
    assert plain_text(ours) == plain_text(reference)
    ours_attachments = [
        (part.get_content_type(), part.get_filename(), part.get_content()) for part in ours.iter_attachments()
    ]
    assert ours_attachments == [
        (part.get_content_type(), part.get_filename(), part.get_content()) for part in reference.iter_attachments()
    ]
    assert len(ours_attachments) == (filename is not None)
