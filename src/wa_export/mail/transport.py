"""The SMTP connection: yagmail's client with its traps defeated, every step under a deadline (mail/deadline.py).

Used naively, yagmail (1) returns False from send() once its retries are spent and, after a disconnect, logs
in again and re-sends (a possible duplicate); (2) looks a missing password up in keyring, then prompts (a hang
under cron); (3) attaches any content that is an existing path and rewrites the text; (4) runs starttls()
without certificate checks; (5) opens a connection per send(); (6) logs to stderr. So `YagmailConnection` keeps
yagmail's client and its lifecycle but replaces `_login` (verified TLS, explicit password) and `_attempt_send`
(one transaction, never retried, all recipients accepted or nothing sent); a test per trap in tests/test_mail.py.
"""

from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from contextlib import suppress
from typing import Literal

import yagmail

from wa_export.mail.deadline import (
    WAITING_FOR_CONNECTION,
    WAITING_FOR_GREETING,
    DeadlineSocket,
    DeadlineTlsSocket,
    SmtpDeadline,
    current_deadline,
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
_TLS_HANDSHAKE = "the TLS handshake and the greeting"
_STARTTLS = "the reply to STARTTLS and the TLS handshake"


def tls_mode(settings: Settings) -> Literal["ssl", "starttls", "none"]:
    """SMTP_SECURITY resolved: auto means implicit TLS on 465 and STARTTLS anywhere else."""
    if settings.smtp_security == "auto":
        return "ssl" if settings.smtp_port == 465 else "starttls"
    return settings.smtp_security


class _Smtp(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        deadline = current_deadline()
        sock = socket.create_connection((host, port), deadline.remaining(), self.source_address)
        if isinstance(self, smtplib.SMTP_SSL):
            deadline.at(_TLS_HANDSHAKE, step="tls")
        else:
            deadline.at(WAITING_FOR_GREETING)
        return DeadlineSocket(sock.family, sock.type, sock.proto, sock.detach())

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        if code == 354:  # the message is being handed over: from now on it may be accepted
            current_deadline().at("the server's reply to the message")
            current_deadline().may_have_delivered = True
        return code, message


class _SmtpSsl(smtplib.SMTP_SSL, _Smtp):
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
        settings = self.settings
        context = ssl.create_default_context() if self.mode != "none" else None
        if context is not None and settings.smtp_ca_file is not None:
            try:  # in addition to the system CAs (create_default_context(cafile=) would replace them)
                context.load_verify_locations(cafile=str(settings.smtp_ca_file))
            except (OSError, ssl.SSLError) as error:
                what = f"SMTP_CA_FILE {settings.smtp_ca_file} cannot be loaded ({describe_error(error)})"
                raise mail_error(
                    settings, "config", what, "Point SMTP_CA_FILE at a PEM file of CA certificates."
                ) from None
        if context is not None:
            context.sslsocket_class = DeadlineTlsSocket
        # A placeholder local_hostname skips smtplib's reverse-DNS getfqdn(); the real one is set once connected.
        smtp = (
            _SmtpSsl("", context=context, local_hostname="localhost")
            if self.mode == "ssl"
            else _Smtp("", 0, "localhost")
        )
        smtp._host = settings.smtp_server or ""  # type: ignore[attr-defined]  # the TLS server_hostname
        try:
            with self._deadline(
                "the session setup (connect, EHLO, STARTTLS, login)", WAITING_FOR_CONNECTION
            ) as deadline:
                try:
                    self._set_up(smtp, context, password, deadline)
                except (OSError, smtplib.SMTPException) as error:
                    raise self._setup_failure(error, deadline) from None
        except BaseException:
            smtp.close()
            self.smtp, self.is_closed = None, True
            raise
        self.last_reply_at = time.monotonic()

    def _set_up(self, smtp: _Smtp, context: ssl.SSLContext | None, password: str, deadline: SmtpDeadline) -> None:
        settings, where = self.settings, f"{self.settings.smtp_server}:{self.settings.smtp_port}"
        code, message = smtp.connect(settings.smtp_server or "", settings.smtp_port)  # TCP, TLS for ssl, greeting
        if code != 220:
            raise smtplib.SMTPConnectError(code, message)
        deadline.at("the reply to EHLO", step="connect")
        # smtplib's EHLO name rule (FQDN, else the address literal) without its reverse-DNS lookup.
        name, address = socket.gethostname(), smtp.sock.getsockname()[0] if smtp.sock else "127.0.0.1"
        smtp.local_hostname = name if "." in name else f"[IPv6:{address}]" if ":" in address else f"[{address}]"
        smtp.ehlo_or_helo_if_needed()
        if self.mode == "starttls":
            if not smtp.has_extn("starttls"):
                # Never fall back to plaintext: the password and the data would travel in clear.
                raise mail_error(
                    settings,
                    "tls",
                    f"The SMTP server {where} does not offer STARTTLS",
                    "Use the server's TLS port (SMTP_SECURITY=ssl, usually port 465) "
                    "or, only on a trusted network, SMTP_SECURITY=none.",
                )
            deadline.at(_STARTTLS, step="tls")
            smtp.starttls(context=context)
            deadline.at("the reply to EHLO after STARTTLS", step="tls")
            smtp.ehlo()
        self.smtp, self.is_closed = smtp, False
        if self.smtp_skip_login:
            return
        deadline.at("the reply to the login (AUTH)", step="auth")
        if not smtp.has_extn("auth"):
            raise mail_error(
                settings,
                "auth",
                f"The SMTP server does not offer a login (AUTH) to user {settings.smtp_username} on this connection",
                "Check SMTP_SECURITY (many servers offer AUTH only over TLS), "
                "or leave SMTP_USERNAME unset for a relay that needs no login.",
            )
        smtp.login(settings.smtp_username or "", password)

    def _setup_failure(self, error: OSError, deadline: SmtpDeadline) -> MailError:
        """The sentence for a failed session setup, by the error and the step it failed at."""
        settings, user = self.settings, self.settings.smtp_username
        where, reason = f"{settings.smtp_server}:{settings.smtp_port}", describe_error(error)
        if isinstance(error, ssl.SSLError) and deadline.waiting_for == _TLS_HANDSHAKE:
            hint = "Check SMTP_SECURITY and SMTP_PORT (465 speaks implicit TLS, 587 and 25 use STARTTLS)."
            return tls_failure(settings, error, f"TLS handshake with {where}", hint)
        if isinstance(error, ssl.SSLError) and deadline.waiting_for == _STARTTLS:
            return tls_failure(settings, error, f"STARTTLS with {where}", "Check the server's TLS configuration.")
        if isinstance(error, smtplib.SMTPResponseException) and deadline.waiting_for == _STARTTLS:
            what = f"The SMTP server {where} refused STARTTLS ({reason})"
            return mail_error(settings, "tls", what, "Check the server's TLS configuration.")
        if isinstance(error, socket.gaierror):
            what = f"Cannot resolve SMTP server {settings.smtp_server} ({reason})"
            return mail_error(settings, "connect", what, "Check SMTP_SERVER and DNS.")
        if isinstance(error, smtplib.SMTPAuthenticationError):
            what = f"The SMTP server refused the login for user {user} ({reason})"
            return mail_error(
                settings, "auth", what, "Check SMTP_USERNAME/SMTP_PASSWORD (Gmail needs an app password)."
            )
        return unreachable(settings, error)

    def _attempt_send(self, recipients: list[str], payload: bytes) -> None:
        """One SMTP transaction within SMTP_TIMEOUT_SECONDS, never retried; raises MailError or DroppedBeforeData."""
        smtp = self.smtp
        if smtp is None:  # closed (e.g. by a failed login) before this transaction
            raise DroppedBeforeData("no open connection")
        with self._deadline(
            "the message transaction (MAIL, RCPT, DATA)", "the reply to MAIL FROM", "timeout"
        ) as deadline:
            self._envelope(smtp, recipients, len(payload), deadline)
            try:
                deadline.at("the reply to DATA")
                code, reply = smtp.data(payload)
            except smtplib.SMTPDataError as error:  # no 354: the message itself was not transferred
                _quietly(smtp)
                raise content_refused(self.settings, error.smtp_code, error.smtp_error, after_354=False) from None
            except (smtplib.SMTPServerDisconnected, OSError) as error:
                smtp.close()
                if deadline.outcome is MailOutcome.REFUSED:  # before the 354 nothing of the message went out
                    raise mail_error(
                        self.settings,
                        "data",
                        f"The connection to the SMTP server was lost before the message was sent ({describe_error(error)})",
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
                _quietly(smtp)
                raise content_refused(self.settings, code, reply, after_354=True)
        self.last_reply_at = time.monotonic()

    def _envelope(self, smtp: _Smtp, recipients: list[str], size: int, deadline: SmtpDeadline) -> None:
        """MAIL FROM and every RCPT TO. Unlike smtplib.sendmail, a refused recipient aborts the transaction
        (RSET) before DATA, so nobody receives a mail that counts as failed and is re-sent on the next run."""
        try:
            code, reply = smtp.mail(self.user, [f"SIZE={size}"] if smtp.has_extn("size") else [])
            if code == 421:
                raise DroppedBeforeData(smtp_reply(code, reply))
            if code != 250:
                _quietly(smtp)
                raise sender_refused(self.settings, self.user, code, reply)
            refused: dict[str, str] = {}
            for recipient in recipients:
                deadline.at("the reply to RCPT TO")
                code, reply = smtp.rcpt(recipient)
                if code == 421:
                    raise DroppedBeforeData(smtp_reply(code, reply))
                if code not in (250, 251):
                    refused[recipient] = smtp_reply(code, reply)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            smtp.close()
            raise DroppedBeforeData(describe_error(error)) from None
        if refused:
            deadline.at("the reply to RSET")
            _quietly(smtp)
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


def _quietly(smtp: smtplib.SMTP) -> None:
    """RSET, to end a refused transaction; the connection's state is then checked before its next use."""
    with suppress(Exception):
        smtp.rset()
