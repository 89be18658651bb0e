"""The SMTP connection: yagmail's client with its traps defeated, every step under a deadline.

Used naively, yagmail (1) returns False from send() once its retries are spent and, after a
disconnect, logs in again and re-sends (a possible duplicate); (2) looks a missing password up
in keyring, then prompts on the terminal (a hang under cron); (3) attaches any content that is
an existing path, turns newlines into <br> and guesses attachment types; (4) runs starttls()
without certificate checks, and implicit TLS on any port; (5) opens a connection per send();
(6) puts a stderr handler on its logger. So `YagmailConnection` keeps yagmail's client and its
lifecycle but replaces `_login` (verified TLS, explicit password) and `_attempt_send` (one
transaction, never retried, all recipients accepted or nothing sent); mail/message.py builds the
message. Correctness pays for these overrides (a test per trap in tests/test_mail.py), and trap 5
costs a login per mail (bench/RESULTS.md: "email: connect + login (once per run)" 1.23 ms against a
0.97 ms transaction). Only this module uses yagmail's or smtplib's internals; pyproject.toml pins
the tested yagmail range. smtplib's timeout bounds each read, not a step, so each step also runs
under an `SmtpDeadline` (mail/deadline.py), whose cutter gets the socket once TCP is up.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, Literal

import yagmail

from wa_export.mail.deadline import WAITING_FOR_CONNECTION, WAITING_FOR_GREETING, SmtpDeadline, SocketCutter
from wa_export.mail.errors import (
    MailError,
    MailOutcome,
    MailStep,
    content_refused,
    describe_error,
    mail_error,
    outcome_of_reply_to_content,
    refusal,
    sender_refused,
    smtp_reply,
    tls_failure,
    unreachable,
)
from wa_export.settings import Settings

# smtplib's per-read timeout is only a backstop: the step's deadline must be what ends a stalled step,
# or a busy machine could turn a reply that never came into a "lost connection" by the luck of a race.
READ_TIMEOUT_MARGIN_SECONDS = 2.0
# Servers keep an idle connection for minutes (RFC 5321 suggests 5); within this, one that just answered is reused unasked.
RECENTLY_ANSWERED_SECONDS = 10.0


def tls_mode(settings: Settings) -> Literal["ssl", "starttls", "none"]:
    """SMTP_SECURITY resolved: auto means implicit TLS on 465 and STARTTLS anywhere else."""
    if settings.smtp_security == "auto":
        return "ssl" if settings.smtp_port == 465 else "starttls"
    return settings.smtp_security


def _tls_context(settings: Settings) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if settings.smtp_ca_file is not None:
        try:  # in addition to the system CAs (create_default_context(cafile=) would replace them)
            context.load_verify_locations(cafile=str(settings.smtp_ca_file))
        except (OSError, ssl.SSLError) as error:
            raise refusal(
                settings,
                "config",
                f"SMTP_CA_FILE {settings.smtp_ca_file} cannot be loaded ({describe_error(error)})",
                "Point SMTP_CA_FILE at a PEM file of CA certificates.",
            ) from None
    return context


def _ehlo_name(connection: smtplib.SMTP) -> str:
    """smtplib's EHLO name rule (FQDN, else the address literal) without its reverse-DNS lookup."""
    name = socket.gethostname()
    if "." in name:
        return name
    try:
        address = connection.sock.getsockname()[0] if connection.sock is not None else "127.0.0.1"
    except OSError:
        address = "127.0.0.1"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


class _Guarded(smtplib.SMTP):
    """Calls `on_connected(sock)` once TCP is up (before TLS and greeting) and `on_reply(code)` per reply."""

    def on_connected(self, sock: socket.socket) -> None:
        pass

    def on_reply(self, code: int) -> None:
        pass

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        self.on_reply(code)
        return code, message

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = socket.create_connection((host, port), timeout, self.source_address)
        self.on_connected(sock)
        if isinstance(self, smtplib.SMTP_SSL):  # smtplib.SMTP_SSL._get_socket's handshake, after the report
            return self.context.wrap_socket(sock, server_hostname=self._host)  # type: ignore[attr-defined]
        return sock


class _GuardedSMTPSSL(_Guarded, smtplib.SMTP_SSL):
    pass


class DroppedBeforeData(Exception):
    """The connection went away before DATA was issued: the message was certainly not accepted."""


class YagmailConnection(yagmail.SMTP):  # type: ignore[misc]
    """yagmail's client (``self.smtp``, its state, ``login()``) with our ``_login`` and ``_attempt_send``."""

    smtp: _Guarded | None  # yagmail's attribute: the open connection, None once closed

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mode = tls_mode(settings)
        self.cutter = SocketCutter()  # replaced with every new connection
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

    @staticmethod
    def handle_password(user: str, password: str | None) -> str:
        # yagmail.password.handle_password would consult keyring, then getpass/input.
        if password is None:
            raise MailError("config", "No SMTP password configured", "Set SMTP_PASSWORD.", outcome=MailOutcome.REFUSED)
        return password

    def _login(self, password: Any) -> None:
        """Connect, secure and log in within SMTP_TIMEOUT_SECONDS (yagmail's login() calls this)."""
        settings = self.settings
        context = _tls_context(settings) if self.mode != "none" else None
        # A placeholder local_hostname skips smtplib's reverse-DNS getfqdn(); connecting happens in _open.
        read_timeout = settings.smtp_timeout_seconds + READ_TIMEOUT_MARGIN_SECONDS
        connection: _Guarded
        if self.mode == "ssl":
            connection = _GuardedSMTPSSL(local_hostname="localhost", timeout=read_timeout, context=context)
        else:
            connection = _Guarded(local_hostname="localhost", timeout=read_timeout)
        self.cutter.close()
        self.cutter = cutter = SocketCutter()
        try:
            with SmtpDeadline(
                settings,
                cutter,
                "the session setup (connect, EHLO, STARTTLS, login)",
                step="connect",
                waiting_for=WAITING_FOR_CONNECTION,
            ) as deadline:

                def connected(sock: socket.socket) -> None:
                    cutter.attach(sock)
                    tls_first = self.mode == "ssl"
                    deadline.at(
                        "the TLS handshake and the greeting" if tls_first else WAITING_FOR_GREETING,
                        step="tls" if tls_first else "connect",
                    )

                connection.on_connected = connected  # type: ignore[method-assign]
                self._open(connection, context, deadline)
                self.smtp = connection
                self.is_closed = False
                if not self.smtp_skip_login:
                    deadline.at("the reply to the login (AUTH)", step="auth")
                    self._authenticate(connection, self.handle_password(settings.smtp_username or "", password))
        except BaseException:
            _quietly(connection.close)
            cutter.close()
            self.smtp = None
            self.is_closed = True
            raise
        self.last_reply_at = time.monotonic()

    def _open(self, connection: smtplib.SMTP, context: ssl.SSLContext | None, deadline: SmtpDeadline) -> None:
        host, port = self.settings.smtp_server or "", self.settings.smtp_port
        where = f"{host}:{port}"
        connection._host = host  # type: ignore[attr-defined]  # TLS server_hostname; smtplib sets it only in __init__
        try:
            code, message = connection.connect(host, port)  # TCP, TLS for ssl, then the greeting
            if code != 220:
                raise smtplib.SMTPConnectError(code, message)
        except ssl.SSLError as error:
            raise tls_failure(
                self.settings,
                error,
                f"TLS handshake with {where}",
                "Check SMTP_SECURITY and SMTP_PORT (465 speaks implicit TLS, 587 and 25 use STARTTLS).",
            ) from None
        except socket.gaierror as error:
            raise self._refused(
                "connect",
                f"Cannot resolve SMTP server {host} ({describe_error(error)})",
                "Check SMTP_SERVER and DNS.",
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise unreachable(self.settings, error) from None
        deadline.at("the reply to EHLO", step="connect")
        connection.local_hostname = _ehlo_name(connection)
        try:
            connection.ehlo_or_helo_if_needed()
            if self.mode != "starttls":
                return
            if not connection.has_extn("starttls"):
                # Never fall back to plaintext: the password and the data would travel in clear.
                raise self._refused(
                    "tls",
                    f"The SMTP server {where} does not offer STARTTLS",
                    "Use the server's TLS port (SMTP_SECURITY=ssl, usually port 465) "
                    "or, only on a trusted network, SMTP_SECURITY=none.",
                )
            deadline.at("the reply to STARTTLS and the TLS handshake", step="tls")
            try:
                connection.starttls(context=context)
            except ssl.SSLError as error:
                raise tls_failure(
                    self.settings, error, f"STARTTLS with {where}", "Check the server's TLS configuration."
                ) from None
            except smtplib.SMTPResponseException as error:
                raise self._refused(
                    "tls",
                    f"The SMTP server {where} refused STARTTLS ({describe_error(error)})",
                    "Check the server's TLS configuration.",
                ) from None
            deadline.at("the reply to EHLO after STARTTLS", step="tls")
            connection.ehlo()
        except (OSError, smtplib.SMTPException) as error:
            raise unreachable(self.settings, error) from None

    def _authenticate(self, connection: smtplib.SMTP, password: str) -> None:
        user = self.settings.smtp_username or ""
        if not connection.has_extn("auth"):
            raise self._refused(
                "auth",
                f"The SMTP server does not offer a login (AUTH) to user {user} on this connection",
                "Check SMTP_SECURITY (many servers offer AUTH only over TLS), "
                "or leave SMTP_USERNAME unset for a relay that needs no login.",
            )
        try:
            connection.login(user, password)
        except smtplib.SMTPAuthenticationError as error:
            raise self._refused(
                "auth",
                f"The SMTP server refused the login for user {user} ({describe_error(error)})",
                "Check SMTP_USERNAME/SMTP_PASSWORD (Gmail needs an app password).",
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise self._refused(
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
        with SmtpDeadline(
            self.settings,
            self.cutter,
            "the message transaction (MAIL, RCPT, DATA)",
            step="timeout",
            waiting_for="the reply to MAIL FROM",
        ) as deadline:
            self._envelope(connection, recipients, len(payload), deadline)

            def after_data_reply(code: int) -> None:
                if code == 354:  # the message is being handed over: from now on it may be accepted
                    deadline.at("the server's reply to the message")
                    deadline.may_have_delivered = True

            try:
                deadline.at("the reply to DATA")
                connection.on_reply = after_data_reply  # type: ignore[method-assign]
                try:
                    code, reply = connection.data(payload)
                finally:
                    del connection.on_reply
            except smtplib.SMTPDataError as error:  # no 354: the message itself was not transferred
                _quietly(connection.rset)
                raise content_refused(self.settings, error.smtp_code, error.smtp_error, MailOutcome.REFUSED) from None
            except (smtplib.SMTPServerDisconnected, OSError) as error:
                _quietly(connection.close)
                if deadline.outcome is MailOutcome.REFUSED:  # before the 354 nothing of the message went out
                    raise self._refused(
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
                raise content_refused(self.settings, code, reply, outcome_of_reply_to_content(code))
        self.last_reply_at = time.monotonic()

    def _envelope(self, connection: _Guarded, recipients: list[str], size: int, deadline: SmtpDeadline) -> None:
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
            _quietly(connection.close)
            raise DroppedBeforeData(describe_error(error)) from None
        if refused:
            deadline.at("the reply to RSET")
            _quietly(connection.rset)
            details = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
            raise self._refused(
                "recipient",
                f"The SMTP server refused recipient(s) {', '.join(refused)} ({details})",
                "Check the address(es); the mail was sent to nobody and will be retried.",
                refused=list(refused),
            )

    def _refused(self, step: MailStep, what: str, hint: str, refused: Sequence[str] = ()) -> MailError:
        return refusal(self.settings, step, what, hint, refused)

    def alive(self) -> bool:
        """True when the connection answers NOOP, or answered moments ago (MailSender reconnects once if not)."""
        if self.smtp is None or self.is_closed or self.smtp.sock is None or self.cutter.is_cut:
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

    def _deadline(self, what: str, waiting_for: str) -> SmtpDeadline:
        return SmtpDeadline(self.settings, self.cutter, what, step="connect", waiting_for=waiting_for)

    def discard(self) -> None:
        """Drop the connection without QUIT (it is dead or in an unknown state)."""
        if self.smtp is not None:
            _quietly(self.smtp.close)
        self.cutter.close()
        self.is_closed = True

    def close(self) -> None:
        """QUIT within SMTP_TIMEOUT_SECONDS, never raising (yagmail's close lets socket errors through)."""
        if self.smtp is not None and not self.cutter.is_cut:
            with suppress(Exception), self._deadline("QUIT", "the reply to QUIT"):
                self.smtp.quit()
        self.discard()


def _quietly(action: Callable[[], object]) -> None:
    with suppress(Exception):
        action()
