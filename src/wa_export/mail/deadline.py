"""Overall deadlines for SMTP steps: smtplib's timeout bounds each read, so a server trickling ``250-`` lines could
hold a run forever. The connection's sockets wait in short socket timeouts that end at the step's deadline.

`stop_sends()` (SIGTERM, signal-safe: it only assigns a number) gives every step at most STOP_GRACE_SECONDS:
a grace, not a cut, so a 250 about to arrive is still heard.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Self, TypeVar

from wa_export.mail.errors import MailError, MailOutcome, MailStep, mail_error
from wa_export.settings import Settings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

STOP_GRACE_SECONDS = 3.0
_STOP_POLL_SECONDS = 0.2  # the longest socket wait between two looks for a stop request
# What a session setup waits for before the server said anything (the hint then names the port and SMTP_SECURITY).
WAITING_FOR_CONNECTION = "the TCP connection"
WAITING_FOR_GREETING = "the server's greeting"

_stop_requested_at: float | None = None  # time.monotonic() of the first stop_sends()
T = TypeVar("T")
_current: ContextVar[SmtpDeadline] = ContextVar("smtp_deadline")
current_deadline = _current.get  # the step the calling code runs in


def stop_sends() -> None:
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
        try:
            return operation()
        except TimeoutError:
            continue  # a slice ended: look at the deadline and the stop request again


class DeadlineSocket(socket.socket):
    """A connection whose every wait ends at the current step's deadline (smtplib reads, writes and wraps it)."""

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        return _waited(self, partial(super().recv_into, *args, **kwargs))

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        rest = memoryview(data)
        while rest:
            rest = rest[_waited(self, partial(self.send, rest, flags)) :]


class DeadlineTlsSocket(DeadlineSocket, ssl.SSLSocket):
    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        _waited(self, partial(super().do_handshake, *args, **kwargs))


@dataclass(eq=False)
class SmtpDeadline:
    """`with SmtpDeadline(...) as deadline:` runs one SMTP step; once expired, any exception leaving
    the block becomes the deadline's MailError, naming `what`, `step` and `waiting_for` (moved by `at()`)."""

    settings: Settings
    what: str
    _: KW_ONLY
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
        """Seconds left for the step; raises TimeoutError once none are."""
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
            return mail_error(settings, "stopped", what, f"Nothing else is sent in this run{retried}.", outcome=outcome)
        what = f"The SMTP server {where} did not finish {self.what} within SMTP_TIMEOUT_SECONDS ({settings.smtp_timeout_seconds:g} s): timed out waiting for {waiting_for}"
        hint = "It may be overloaded or misbehaving: check its logs, or raise SMTP_TIMEOUT_SECONDS if it is only slow"
        if self.step == "connect" and waiting_for in (WAITING_FOR_CONNECTION, WAITING_FOR_GREETING):
            hint = "Check SMTP_SERVER/SMTP_PORT, the firewall, and that SMTP_SECURITY matches the port (465 = ssl); the server may also be overloaded"
        hint += retried if self.step == "timeout" else ""
        return mail_error(settings, self.step, what, f"{hint}.", outcome=outcome)
