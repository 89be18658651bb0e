"""The SMTP connection: yagmail's client with its traps defeated, every step under a deadline.

Used naively, yagmail (1) returns False from send() once its retries are spent and, after a disconnect, logs
in again and re-sends (a possible duplicate); (2) looks a missing password up in keyring, then prompts (a hang
under cron); (3) attaches any content that is an existing path and rewrites the text; (4) runs starttls()
without certificate checks; (5) opens a connection per send(); (6) logs to stderr. So `YagmailConnection` keeps
yagmail's client and its lifecycle but replaces `_login` (verified TLS, explicit password) and `_attempt_send`
(one transaction, never retried, all recipients accepted or nothing sent); a test per trap in tests/test_mail.py.
Only this module uses yagmail's or smtplib's internals; pyproject.toml pins the tested yagmail range.
"""

from __future__ import annotations

import io
import logging
import smtplib
import socket
import ssl
import time
from contextlib import suppress
from functools import partial
from typing import Any, Literal

import yagmail

from wa_export.mail.deadline import (
    WAITING_FOR_CONNECTION,
    WAITING_FOR_GREETING,
    DeadlineReader,
    SmtpDeadline,
    current_deadline,
    waited,
)
from wa_export.mail.errors import (
    MailError,
    MailOutcome,
    content_refused,
    describe_error,
    mail_error,
    sender_refused,
    smtp_reply,
    tls_failure,
    unreachable,
)
from wa_export.settings import Settings

# Servers keep an idle connection for minutes (RFC 5321 suggests 5); within this, one that just answered is reused unasked.
RECENTLY_ANSWERED_SECONDS = 10.0


def tls_mode(settings: Settings) -> Literal["ssl", "starttls", "none"]:
    """SMTP_SECURITY resolved: auto means implicit TLS on 465 and STARTTLS anywhere else."""
    if settings.smtp_security == "auto":
        return "ssl" if settings.smtp_port == 465 else "starttls"
    return settings.smtp_security


class _TlsSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        waited(self, partial(super().do_handshake, block))


def _tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.sslsocket_class = _TlsSocket  # its handshake within the step's deadline
    if settings.smtp_ca_file is not None:
        try:  # in addition to the system CAs (create_default_context(cafile=) would replace them)
            context.load_verify_locations(cafile=str(settings.smtp_ca_file))
        except (OSError, ssl.SSLError) as error:
            raise mail_error(
                settings,
                "config",
                f"SMTP_CA_FILE {settings.smtp_ca_file} cannot be loaded ({describe_error(error)})",
                "Point SMTP_CA_FILE at a PEM file of CA certificates.",
            ) from None
    return context


class _Smtp(smtplib.SMTP):
    """smtplib's client whose every socket wait ends at the current step's deadline (mail/deadline.py)."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        deadline = current_deadline()
        sock = socket.create_connection((host, port), deadline.remaining(), self.source_address)
        if not isinstance(self, smtplib.SMTP_SSL):
            deadline.at(WAITING_FOR_GREETING)
            return sock
        deadline.at("the TLS handshake and the greeting", step="tls")
        return self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:
            self.file = io.BufferedReader(DeadlineReader(self.sock))
        code, message = super().getreply()
        if code == 354:  # the message is being handed over: from now on it may be accepted
            current_deadline().at("the server's reply to the message")
            current_deadline().may_have_delivered = True
        return code, message

    def send(self, s: Any) -> None:
        if self.sock is None:
            raise smtplib.SMTPServerDisconnected("please run connect() first")
        sock, rest = self.sock, memoryview(s.encode(self.command_encoding) if isinstance(s, str) else s)
        try:
            while rest:
                rest = rest[waited(sock, partial(sock.send, rest)) :]
        except OSError:
            self.close()
            raise smtplib.SMTPServerDisconnected("Server not connected") from None


class _SmtpSsl(_Smtp, smtplib.SMTP_SSL):
    pass


class DroppedBeforeData(Exception):
    """The connection went away before DATA was issued: the message was certainly not accepted."""


class YagmailConnection(yagmail.SMTP):  # type: ignore[misc]
    """yagmail's client (``self.smtp``, its state, ``login()``) with our ``_login`` and ``_attempt_send``."""

    smtp: _Smtp | None  # yagmail's attribute: the open connection, None once closed

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mode = tls_mode(settings)
        self.last_reply_at: float | None = None  # time.monotonic() of the last completed login or transaction
        super().__init__(
            user=settings.smtp_from,  # yagmail's "user" is the From / envelope sender
            password=settings.smtp_password or "",  # never None: None means keyring + prompt
            host=settings.smtp_server or "",
            port=settings.smtp_port,
            smtp_ssl=self.mode == "ssl",
            smtp_starttls=self.mode == "starttls",
            smtp_skip_login=not settings.smtp_username,
            soft_email_validation=False,  # addresses are validated by check_recipients
        )
        self.set_logging(None)  # replace the stderr handler yagmail just installed (its records could carry addresses)
        yag_logger = logging.getLogger("yagmail.log")
        yag_logger.setLevel(logging.WARNING)
        yag_logger.propagate = False

    def _login(self, password: str) -> None:
        """Connect, secure and log in within SMTP_TIMEOUT_SECONDS (yagmail's login() calls this)."""
        context = _tls_context(self.settings) if self.mode != "none" else None
        # A placeholder local_hostname skips smtplib's reverse-DNS getfqdn(); _open sets the real one.
        connection = (
            _SmtpSsl(local_hostname="localhost", context=context)
            if self.mode == "ssl"
            else _Smtp(local_hostname="localhost")
        )
        try:
            with self._deadline(
                "the session setup (connect, EHLO, STARTTLS, login)", WAITING_FOR_CONNECTION
            ) as deadline:
                self._open(connection, context, deadline)
                self.smtp, self.is_closed = connection, False
                if not self.smtp_skip_login:
                    deadline.at("the reply to the login (AUTH)", step="auth")
                    self._authenticate(connection, password)
        except BaseException:
            connection.close()
            self.smtp, self.is_closed = None, True
            raise
        self.last_reply_at = time.monotonic()

    def _open(self, connection: _Smtp, context: ssl.SSLContext | None, deadline: SmtpDeadline) -> None:
        settings, host = self.settings, self.settings.smtp_server or ""
        where = f"{host}:{settings.smtp_port}"
        connection._host = host  # type: ignore[attr-defined]  # TLS server_hostname; smtplib sets it only in __init__
        try:
            code, message = connection.connect(host, settings.smtp_port)  # TCP, TLS for ssl, then the greeting
            if code != 220:
                raise smtplib.SMTPConnectError(code, message)
        except ssl.SSLError as error:
            hint = "Check SMTP_SECURITY and SMTP_PORT (465 speaks implicit TLS, 587 and 25 use STARTTLS)."
            raise tls_failure(settings, error, f"TLS handshake with {where}", hint) from None
        except socket.gaierror as error:
            what = f"Cannot resolve SMTP server {host} ({describe_error(error)})"
            raise mail_error(settings, "connect", what, "Check SMTP_SERVER and DNS.") from None
        except (OSError, smtplib.SMTPException) as error:
            raise unreachable(settings, error) from None
        deadline.at("the reply to EHLO", step="connect")
        sock_name = connection.sock.getsockname()[0] if connection.sock is not None else "127.0.0.1"
        # smtplib's EHLO name rule (FQDN, else the address literal) without its reverse-DNS lookup.
        name = socket.gethostname()
        connection.local_hostname = (
            name if "." in name else f"[IPv6:{sock_name}]" if ":" in sock_name else f"[{sock_name}]"
        )
        try:
            connection.ehlo_or_helo_if_needed()
            if self.mode != "starttls":
                return
            if not connection.has_extn("starttls"):
                # Never fall back to plaintext: the password and the data would travel in clear.
                raise mail_error(
                    settings,
                    "tls",
                    f"The SMTP server {where} does not offer STARTTLS",
                    "Use the server's TLS port (SMTP_SECURITY=ssl, usually port 465) "
                    "or, only on a trusted network, SMTP_SECURITY=none.",
                )
            deadline.at("the reply to STARTTLS and the TLS handshake", step="tls")
            try:
                connection.starttls(context=context)
            except ssl.SSLError as error:
                hint = "Check the server's TLS configuration."
                raise tls_failure(settings, error, f"STARTTLS with {where}", hint) from None
            except smtplib.SMTPResponseException as error:
                what = f"The SMTP server {where} refused STARTTLS ({describe_error(error)})"
                raise mail_error(settings, "tls", what, "Check the server's TLS configuration.") from None
            deadline.at("the reply to EHLO after STARTTLS", step="tls")
            connection.ehlo()
        except (OSError, smtplib.SMTPException) as error:
            raise unreachable(settings, error) from None

    def _authenticate(self, connection: smtplib.SMTP, password: str) -> None:
        user = self.settings.smtp_username or ""
        if not connection.has_extn("auth"):
            raise mail_error(
                self.settings,
                "auth",
                f"The SMTP server does not offer a login (AUTH) to user {user} on this connection",
                "Check SMTP_SECURITY (many servers offer AUTH only over TLS), "
                "or leave SMTP_USERNAME unset for a relay that needs no login.",
            )
        try:
            connection.login(user, password)
        except smtplib.SMTPAuthenticationError as error:
            raise mail_error(
                self.settings,
                "auth",
                f"The SMTP server refused the login for user {user} ({describe_error(error)})",
                "Check SMTP_USERNAME/SMTP_PASSWORD (Gmail needs an app password).",
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise mail_error(
                self.settings,
                "auth",
                f"The SMTP server offers no login method smtplib supports for user {user}",
                "Check the server's AUTH mechanisms (PLAIN, LOGIN or CRAM-MD5 are supported).",
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise unreachable(self.settings, error) from None

    def _attempt_send(self, recipients: list[str], payload: bytes) -> None:
        """One SMTP transaction within SMTP_TIMEOUT_SECONDS, never retried; raises MailError or DroppedBeforeData."""
        connection = self.smtp
        if connection is None:  # closed (e.g. by a failed login) before this transaction
            raise DroppedBeforeData("no open connection")
        with self._deadline(
            "the message transaction (MAIL, RCPT, DATA)", "the reply to MAIL FROM", "timeout"
        ) as deadline:
            self._envelope(connection, recipients, len(payload), deadline)
            try:
                deadline.at("the reply to DATA")
                code, reply = connection.data(payload)
            except smtplib.SMTPDataError as error:  # no 354: the message itself was not transferred
                _quietly(connection.rset)
                raise content_refused(self.settings, error.smtp_code, error.smtp_error, after_354=False) from None
            except (smtplib.SMTPServerDisconnected, OSError) as error:
                connection.close()
                if deadline.outcome is MailOutcome.REFUSED:  # before the 354 nothing of the message went out
                    raise mail_error(
                        self.settings,
                        "data",
                        "The connection to the SMTP server was lost before the message was sent "
                        f"({describe_error(error)})",
                        "Nothing was delivered and the mail is retried on the next run; if it keeps happening, "
                        "check the server's logs and connection limits.",
                    ) from None
                raise mail_error(
                    self.settings,
                    "data",
                    f"The connection to the SMTP server was lost while sending the message ({describe_error(error)})",
                    "If it keeps happening, check the server's message size limit and logs.",
                    outcome=MailOutcome.UNKNOWN,
                ) from None
            if code != 250:
                _quietly(connection.rset)
                raise content_refused(self.settings, code, reply, after_354=True)
        self.last_reply_at = time.monotonic()

    def _envelope(self, connection: _Smtp, recipients: list[str], size: int, deadline: SmtpDeadline) -> None:
        """MAIL FROM and every RCPT TO. Unlike smtplib.sendmail, a refused recipient aborts the transaction
        (RSET) before DATA, so nobody receives a mail that counts as failed and is re-sent on the next run."""
        options = [f"SIZE={size}"] if connection.has_extn("size") else []
        try:
            code, reply = connection.mail(self.user, options)
            if code == 421:
                raise DroppedBeforeData(smtp_reply(code, reply))
            if code != 250:
                _quietly(connection.rset)
                raise sender_refused(self.settings, self.user, code, reply)
            refused: dict[str, str] = {}
            for recipient in recipients:
                deadline.at("the reply to RCPT TO")
                code, reply = connection.rcpt(recipient)
                if code == 421:
                    raise DroppedBeforeData(smtp_reply(code, reply))
                if code not in (250, 251):
                    refused[recipient] = smtp_reply(code, reply)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            connection.close()
            raise DroppedBeforeData(describe_error(error)) from None
        if refused:
            deadline.at("the reply to RSET")
            _quietly(connection.rset)
            details = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
            raise mail_error(
                self.settings,
                "recipient",
                f"The SMTP server refused recipient(s) {', '.join(refused)} ({details})",
                "Check the address(es); the mail was sent to nobody and will be retried.",
                refused=list(refused),
            )

    def _deadline(self, what: str, waiting_for: str, step: Literal["connect", "timeout"] = "connect") -> SmtpDeadline:
        return SmtpDeadline(self.settings, what, step=step, waiting_for=waiting_for)

    def alive(self) -> bool:
        """True when the connection answers NOOP, or answered moments ago (MailSender reconnects once if not)."""
        if self.smtp is None or self.is_closed or self.smtp.sock is None:
            return False
        if self.last_reply_at is not None and time.monotonic() - self.last_reply_at < RECENTLY_ANSWERED_SECONDS:
            return True
        try:
            with self._deadline("the connection check (NOOP)", "the reply to NOOP"):
                code, _ = self.smtp.noop()
        except (MailError, smtplib.SMTPException, OSError):
            return False
        if code == 250:
            self.last_reply_at = time.monotonic()
        return code == 250

    def discard(self) -> None:
        """Drop the connection without QUIT (it is dead or in an unknown state)."""
        if self.smtp is not None:
            self.smtp.close()
        self.is_closed = True

    def close(self) -> None:
        """QUIT within SMTP_TIMEOUT_SECONDS, never raising (yagmail's close lets socket errors through)."""
        if self.smtp is not None and self.smtp.sock is not None:
            with suppress(Exception), self._deadline("QUIT", "the reply to QUIT"):
                self.smtp.quit()
        self.discard()


def _quietly(rset: Any) -> None:
    with suppress(Exception):
        rset()
