"""The per-run sender: one SMTP connection (yagmail's client, its traps defeated: one test each in test_mail.py),
every step under an overall deadline (smtplib's timeout bounds each read only: a server trickling ``250-`` lines
could hold a run forever), and whether a failed send may have delivered."""

from __future__ import annotations

import errno
import logging
import os
import select
import smtplib
import socket
import ssl
import time
from collections.abc import Callable
from contextlib import suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Self, TypeVar

import yagmail

from wa_export.mail import errors
from wa_export.mail.errors import MailError, MailOutcome, MailStep, describe_error, refusal, smtp_reply
from wa_export.mail.message import OutgoingMail, build_message, check_attachment, check_recipients, check_sendable
from wa_export.settings import Settings

# Servers keep an idle connection for minutes (RFC 5321 suggests 5); within this, one that just answered is reused unasked.
RECENTLY_ANSWERED_SECONDS = 10.0
STOP_GRACE_SECONDS = 3.0  # after stop_sends(): a grace, not a cut, so a 250 about to arrive is still heard
_STOP_POLL_SECONDS = 0.2  # the longest socket wait between two looks for a stop request

_stop_requested_at: float | None = None  # time.monotonic() of the first stop_sends()
T = TypeVar("T")
_current: ContextVar[SmtpDeadline] = ContextVar("smtp_deadline")
current_deadline = _current.get  # the step the calling code runs in


def stop_sends() -> None:  # signal-safe: SIGTERM calls it
    global _stop_requested_at
    if _stop_requested_at is None:
        _stop_requested_at = time.monotonic()


def clear_stop() -> None:
    """End the stop request once the run it stopped is over (a process that runs the CLI again, e.g. tests)."""
    global _stop_requested_at
    _stop_requested_at = None


def _waited(sock: socket.socket, operation: Callable[[], T]) -> T:
    """`operation`, a blocking wait on `sock`, within the current step's deadline; TimeoutError once it passed."""
    while True:
        sock.settimeout(min(current_deadline().remaining(), _STOP_POLL_SECONDS))
        with suppress(TimeoutError):  # a slice ended: look at the deadline and the stop request again
            return operation()


class DeadlineSocket(socket.socket):
    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        return _waited(self, partial(super().recv_into, *args, **kwargs))

    def sendall(self, data: Any, flags: int = 0) -> None:
        rest = memoryview(data)
        while rest:
            rest = rest[_waited(self, partial(self.send, rest, flags)) :]


class DeadlineTlsSocket(DeadlineSocket, ssl.SSLSocket):
    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        _waited(self, partial(super().do_handshake, *args, **kwargs))


@dataclass(eq=False)
class SmtpDeadline:
    """`with SmtpDeadline(...):` runs one SMTP step; once expired, any exception leaving the block becomes the
    deadline's MailError, naming `what`, `step` and `waiting_for` (moved along by `at()`)."""

    settings: Settings
    what: str
    step: MailStep
    waiting_for: str
    outcome: MailOutcome = MailOutcome.REFUSED  # unknown once the server asked for the message (354)
    _started: float = field(default_factory=time.monotonic)

    def at(self, waiting_for: str, step: MailStep | None = None) -> None:
        self.waiting_for = waiting_for
        self.step = step or self.step

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._token = _current.set(self)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        _current.reset(self._token)
        due, expiry = self._due()
        if exc_type is not None and issubclass(exc_type, Exception) and time.monotonic() >= due:
            raise self.error(expiry) from None

    def remaining(self) -> float:
        left = self._due()[0] - time.monotonic()
        if left <= 0:
            raise TimeoutError("the SMTP step's deadline passed")
        return left

    def _due(self) -> tuple[float, Literal["timeout", "stopped"]]:
        due = self._started + self.settings.smtp_timeout_seconds
        stop = _stop_requested_at
        if stop is not None and max(stop, self._started) + STOP_GRACE_SECONDS < due:
            return max(stop, self._started) + STOP_GRACE_SECONDS, "stopped"
        return due, "timeout"

    def error(self, expiry: Literal["timeout", "stopped"]) -> MailError:
        settings, outcome, waiting_for = self.settings, self.outcome, self.waiting_for
        where = f"{settings.smtp_server}:{settings.smtp_port}"
        retried = "; the export is retried on the next run" if outcome is MailOutcome.REFUSED else ""
        if expiry == "stopped":
            what = f"Stopped during {self.what} with the SMTP server {where} (wa-export was asked to stop while waiting for {waiting_for})"
            return MailError(settings, "stopped", what, f"Nothing else is sent in this run{retried}.", outcome=outcome)
        what = f"The SMTP server {where} did not finish {self.what} within SMTP_TIMEOUT_SECONDS ({settings.smtp_timeout_seconds:g} s): timed out waiting for {waiting_for}"
        hint = "It may be overloaded or misbehaving: check its logs, or raise SMTP_TIMEOUT_SECONDS if it is only slow"
        if self.step == "connect" and waiting_for in (errors.WAITING_FOR_CONNECTION, errors.WAITING_FOR_GREETING):
            hint = "Check SMTP_SERVER/SMTP_PORT, the firewall, and that SMTP_SECURITY matches the port (465 = ssl); the server may also be overloaded"
        hint += retried if self.step == "timeout" else ""
        return MailError(settings, self.step, what, f"{hint}.", outcome=outcome)


def tls_mode(settings: Settings) -> Literal["ssl", "starttls", "none"]:
    """SMTP_SECURITY resolved: auto means implicit TLS on 465 and STARTTLS anywhere else."""
    if settings.smtp_security == "auto":
        return "ssl" if settings.smtp_port == 465 else "starttls"
    return settings.smtp_security


class _Smtp(smtplib.SMTP):
    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        """TCP to each address in turn within the step's deadline (create_connection gives each the whole timeout)."""
        error: OSError = OSError(f"no address found for {host}")
        for family, kind, proto, _, address in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            sock = DeadlineSocket(family, kind, proto)
            try:
                sock.setblocking(False)
                if (code := sock.connect_ex(address)) not in (0, errno.EINPROGRESS):
                    raise OSError(code, os.strerror(code))
                writable = select.poll()  # not select(): it refuses descriptors numbered 1024 or more
                writable.register(sock, select.POLLOUT)
                while not writable.poll(min(current_deadline().remaining(), _STOP_POLL_SECONDS) * 1000):
                    pass  # a slice ended: look at the deadline and the stop request again
                if code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise OSError(code, os.strerror(code))
                sock.setblocking(True)  # later waits set their own timeouts; TLS refuses to wrap a non-blocking socket
                ssl_next = isinstance(self, smtplib.SMTP_SSL)
                waiting_for = errors.TLS_HANDSHAKE if ssl_next else errors.WAITING_FOR_GREETING
                current_deadline().at(waiting_for, "tls" if ssl_next else None)
                return sock
            except OSError as failure:  # TimeoutError too: the next address then fails at once
                sock.close()
                error = failure
        raise error

    def getreply(self) -> tuple[int, bytes]:
        code, message = super().getreply()
        if code == 354:  # the message is being handed over: from now on it may be accepted
            current_deadline().at("the server's reply to the message")
            current_deadline().outcome = MailOutcome.UNKNOWN
        return code, message


class _SmtpSsl(smtplib.SMTP_SSL, _Smtp):
    pass


class MailSender(yagmail.SMTP):  # type: ignore[misc]
    """Every mail of a run over one connection (yagmail's ``smtp``), reopened once if the server closed it between
    sends. yagmail's send() (it retries and returns False), login and close are replaced by ours."""

    smtp: _Smtp | None  # yagmail's attribute: the open connection, None once closed

    def __init__(self, settings: Settings) -> None:
        self.settings, self.mode = settings, tls_mode(settings)
        self.where = f"{settings.smtp_server}:{settings.smtp_port}"
        self.connections_opened = 0
        self.last_reply_at = float("-inf")  # time.monotonic() of the last completed login or transaction
        # yagmail's "user" is the From / envelope sender; addresses are validated by check_recipients.
        super().__init__(settings.smtp_from, smtp_skip_login=not settings.smtp_username, soft_email_validation=False)
        self.set_logging(None)  # replace the stderr handler yagmail just installed (its records could carry addresses)
        logging.getLogger("yagmail.log").propagate = False

    def __enter__(self) -> Self:
        return self

    def verify_login(self) -> None:
        """Connect, secure and log in (no mail sent): for `health --smtp-login` and `test-email`."""
        check_sendable(self.settings)
        self._open()

    def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail` to exactly `mail.to`, or raise MailError."""
        settings = self.settings
        check_sendable(settings)
        check_recipients(mail.to, settings)
        data = check_attachment(mail.attachment, settings) if mail.attachment is not None else None
        payload = build_message(mail, settings.smtp_from or "", data, sender_name=settings.smtp_from_name)
        del data  # the file's bytes are not needed while the (larger) message goes out
        while True:
            reused = self._open()
            try:
                return self._attempt_send(list(mail.to), payload)
            except MailError as error:
                if error.step == "connect":  # the connection was gone before the message went out
                    self.discard()
                if error.step != "connect" or not reused:  # else the server closed an idle connection: retry once
                    raise
            except BaseException:  # e.g. Ctrl-C mid-transaction: a QUIT now would be read as part of the message
                self.discard()
                raise

    def _open(self) -> bool:
        """True if the open connection is reused, else a new one is opened and logged into."""
        if self.smtp is not None and self.alive():
            return True
        self.discard()
        self.login()  # yagmail's, calling our _login
        self.connections_opened += 1
        return False

    def _login(self, _: object) -> None:
        """Connect, secure and log in within SMTP_TIMEOUT_SECONDS (yagmail's login() calls this)."""
        settings, context = self.settings, None if self.mode == "none" else ssl.create_default_context()
        if context is not None:
            context.sslsocket_class = DeadlineTlsSocket
            try:  # SMTP_CA_FILE in addition to the system CAs (create_default_context(cafile=) would replace them)
                if settings.smtp_ca_file is not None:
                    context.load_verify_locations(cafile=str(settings.smtp_ca_file))
            except (OSError, ssl.SSLError) as error:
                what = f"SMTP_CA_FILE {settings.smtp_ca_file} cannot be loaded ({describe_error(error)})"
                hint = "Point SMTP_CA_FILE at a PEM file of CA certificates."
                raise refusal(settings, "config", what, hint) from None
        # A placeholder local_hostname skips smtplib's reverse-DNS getfqdn(); the real one is set once connected.
        smtp = _SmtpSsl(context=context, local_hostname="x") if self.mode == "ssl" else _Smtp(local_hostname="x")
        smtp._host = settings.smtp_server or ""  # type: ignore[attr-defined]  # the TLS server_hostname
        self.smtp, self.is_closed = smtp, False
        try:
            what = "the session setup (connect, EHLO, STARTTLS, login)"
            with SmtpDeadline(settings, what, "connect", errors.WAITING_FOR_CONNECTION) as step:
                try:
                    self._set_up(smtp, context, step)
                except (OSError, smtplib.SMTPException) as error:
                    raise errors.setup_failure(settings, error, step.waiting_for) from None
        except BaseException:
            self.discard()
            raise
        self.last_reply_at = time.monotonic()

    def _set_up(self, smtp: _Smtp, context: ssl.SSLContext | None, deadline: SmtpDeadline) -> None:
        settings = self.settings
        code, message = smtp.connect(settings.smtp_server or "", settings.smtp_port)  # TCP, TLS for ssl, greeting
        if code != 220:
            raise smtplib.SMTPConnectError(code, message)
        deadline.at("the reply to EHLO", step="connect")
        # smtplib's EHLO name rule (FQDN, else the address literal) without its reverse-DNS lookup.
        name, address = socket.gethostname(), smtp.sock.getsockname()[0] if smtp.sock else "127.0.0.1"
        smtp.local_hostname = name if "." in name else f"[IPv6:{address}]" if ":" in address else f"[{address}]"
        smtp.ehlo_or_helo_if_needed()
        if self.mode == "starttls":
            if not smtp.has_extn("starttls"):  # never fall back to plaintext: password and data would travel in clear
                hint = "Use the server's TLS port (SMTP_SECURITY=ssl, usually port 465) or, only on a trusted network, SMTP_SECURITY=none."
                raise refusal(settings, "tls", f"The SMTP server {self.where} does not offer STARTTLS", hint)
            deadline.at(errors.STARTTLS, step="tls")
            smtp.starttls(context=context)
            deadline.at("the reply to EHLO after STARTTLS", step="tls")
            smtp.ehlo()
        if self.smtp_skip_login:
            return
        deadline.at("the reply to the login (AUTH)", step="auth")
        if not smtp.has_extn("auth"):
            what = f"The SMTP server does not offer a login (AUTH) to user {settings.smtp_username} on this connection"
            hint = "Check SMTP_SECURITY (many servers offer AUTH only over TLS), or leave SMTP_USERNAME unset for a relay that needs no login."
            raise refusal(settings, "auth", what, hint)
        smtp.login(settings.smtp_username or "", settings.smtp_password or "")

    def _attempt_send(self, recipients: list[str], payload: bytes) -> None:
        """One SMTP transaction within SMTP_TIMEOUT_SECONDS, never retried; raises MailError. Unlike
        smtplib.sendmail, a refused recipient aborts it (RSET) before DATA: nobody receives a mail counted as failed."""
        settings, smtp = self.settings, self.smtp
        assert smtp is not None  # send() opened it
        what = "the message transaction (MAIL, RCPT, DATA)"
        with SmtpDeadline(settings, what, "timeout", "the reply to MAIL FROM") as deadline:
            refused: dict[str, str] = {}
            try:
                code, reply = smtp.mail(self.user, [f"SIZE={len(payload)}"] if smtp.has_extn("size") else [])
                if code not in (250, 421):
                    _reset(smtp)
                    raise errors.reply_refused(settings, code, reply, "MAIL")
                for recipient in recipients if code == 250 else ():
                    deadline.at("the reply to RCPT TO")
                    code, reply = smtp.rcpt(recipient)
                    if code == 421:
                        break
                    if code not in (250, 251):
                        refused[recipient] = smtp_reply(code, reply)
            except (smtplib.SMTPServerDisconnected, OSError) as error:
                smtp.close()
                raise errors.dropped(settings, describe_error(error)) from None
            if code == 421:  # the server is closing the connection
                raise errors.dropped(settings, smtp_reply(code, reply))
            if refused:
                deadline.at("the reply to RSET")
                _reset(smtp)
                details = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
                what = f"The SMTP server refused recipient(s) {', '.join(refused)} ({details})"
                hint = "Check the address(es); the mail was sent to nobody and will be retried."
                raise refusal(settings, "recipient", what, hint, refused=list(refused))
            try:
                deadline.at("the reply to DATA")
                code, reply = smtp.data(payload)
            except smtplib.SMTPDataError as error:  # no 354: the message itself was not transferred
                _reset(smtp)
                raise errors.reply_refused(settings, error.smtp_code, error.smtp_error) from None
            except (smtplib.SMTPServerDisconnected, OSError) as error:
                smtp.close()
                reason = describe_error(error)
                if deadline.outcome is MailOutcome.REFUSED:  # before the 354 nothing of the message went out
                    what = f"The connection to the SMTP server was lost before the message was sent ({reason})"
                    hint = "Nothing was delivered and the mail is retried on the next run; if it keeps happening, check the server's logs and connection limits."
                else:
                    what = f"The connection to the SMTP server was lost while sending the message ({reason})"
                    hint = "If it keeps happening, check the server's message size limit and logs."
                raise MailError(settings, "data", what, hint, outcome=deadline.outcome) from None
            if code != 250:
                _reset(smtp)
                raise errors.reply_refused(settings, code, reply, after_354=True)
        self.last_reply_at = time.monotonic()

    def alive(self) -> bool:
        """True when the connection answers NOOP, or answered moments ago (send() reconnects once if not)."""
        if self.smtp is None or self.smtp.sock is None:
            return False
        if time.monotonic() - self.last_reply_at < RECENTLY_ANSWERED_SECONDS:
            return True
        with (
            suppress(MailError, smtplib.SMTPException, OSError),
            SmtpDeadline(self.settings, "the connection check (NOOP)", "connect", "the reply to NOOP"),
        ):
            if self.smtp.noop()[0] == 250:
                self.last_reply_at = time.monotonic()
                return True
        return False

    def discard(self) -> None:
        """Drop the connection without QUIT (it is dead or in an unknown state)."""
        if self.smtp is not None:
            self.smtp.close()
        self.smtp, self.is_closed = None, True

    def close(self) -> None:
        """QUIT within SMTP_TIMEOUT_SECONDS, never raising (yagmail's close lets socket errors through)."""
        if self.smtp is not None and self.smtp.sock is not None:
            with suppress(Exception), SmtpDeadline(self.settings, "QUIT", "connect", "the reply to QUIT"):
                self.smtp.quit()
        self.discard()


def _reset(smtp: smtplib.SMTP) -> None:
    """RSET, ending a refused transaction; a connection that fails it is checked before its next use."""
    with suppress(Exception):
        smtp.rset()
