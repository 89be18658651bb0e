"""Overall deadlines for SMTP steps (smtplib's timeout bounds each read, so a server trickling
``250-`` lines could hold a run forever): once SMTP_TIMEOUT_SECONDS pass, the watchdog thread
(wa_export/timers.py) shuts the socket down and the step fails with the deadline's MailError.

`stop_sends()` (SIGTERM, signal-safe: it only assigns a number) gives every step at most
STOP_GRACE_SECONDS: a grace, not a cut, so a 250 about to arrive is still heard.
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress
from dataclasses import KW_ONLY, dataclass, field
from typing import Literal, Self

from wa_export.mail.errors import MailError, MailOutcome, MailStep, mail_error
from wa_export.settings import Settings
from wa_export.timers import Timer, TimerThread

STOP_GRACE_SECONDS = 3.0
# How often the watchdog looks for a stop request (a timeout needs no polling).
_STOP_POLL_SECONDS = 0.2
# One watchdog thread for every deadline of the process; its callbacks only cut sockets, never block.
_WATCHDOG = TimerThread("smtp-deadlines")

# What a session setup waits for before the server said anything (the hint then names the port and SMTP_SECURITY).
WAITING_FOR_CONNECTION = "the TCP connection"
WAITING_FOR_GREETING = "the server's greeting"

_stop_requested_at: float | None = None  # time.monotonic() of the first stop_sends()


def stop_sends() -> None:
    global _stop_requested_at
    if _stop_requested_at is None:
        _stop_requested_at = time.monotonic()


def clear_stop() -> None:
    """End the stop request once the run it stopped is over (a process that runs the CLI again, e.g. tests)."""
    global _stop_requested_at
    _stop_requested_at = None


class SocketCutter:
    """Shuts one TCP connection down from any thread, through a duplicate descriptor (which survives TLS wrapping)."""

    def __init__(self) -> None:
        self._handle: socket.socket | None = None
        self.is_cut = False

    def attach(self, sock: socket.socket) -> None:
        """Watch `sock` (call right after connecting); cut at once if the deadline already passed."""
        self.close()
        self._handle = sock.dup()
        if self.is_cut:
            self.cut()

    def cut(self) -> None:
        self.is_cut = True
        handle = self._handle
        if handle is not None:
            with suppress(OSError):  # already closed by either side
                handle.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.close()


Expiry = Literal["timeout", "stopped"]


@dataclass(eq=False)
class SmtpDeadline:
    """`with SmtpDeadline(...) as deadline:` runs one SMTP step; once expired, any exception leaving
    the block becomes the deadline's MailError, naming `what`, `step` and `waiting_for` (moved by `at()`)."""

    settings: Settings
    cutter: SocketCutter
    what: str
    _: KW_ONLY
    step: MailStep
    waiting_for: str
    may_have_delivered: bool = False  # set once the server asked for the message (354): see `outcome`
    expired: Expiry | None = None
    _started: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _done: bool = False
    _timer: Timer | None = None

    @property
    def seconds(self) -> float:
        return self.settings.smtp_timeout_seconds

    @property
    def outcome(self) -> MailOutcome:
        return MailOutcome.UNKNOWN if self.may_have_delivered else MailOutcome.REFUSED

    def at(self, waiting_for: str, step: MailStep | None = None) -> None:
        self.waiting_for = waiting_for
        if step is not None:
            self.step = step

    def __enter__(self) -> Self:
        self._started = time.monotonic()
        self._timer = _WATCHDOG.add(Timer(lambda: self._due()[0], self._expire, poll=_STOP_POLL_SECONDS))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        with self._lock:
            self._done = True
        if self._timer is not None:
            _WATCHDOG.remove(self._timer)
        if self.expired is not None and exc_type is not None and issubclass(exc_type, Exception):
            raise self.error() from None

    def _due(self) -> tuple[float, Expiry]:
        due = self._started + self.seconds
        stop = _stop_requested_at
        if stop is not None:
            stop_due = max(stop, self._started) + STOP_GRACE_SECONDS
            if stop_due < due:
                return stop_due, "stopped"
        return due, "timeout"

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = self._due()[1]
            self.cutter.cut()

    def error(self) -> MailError:
        settings = self.settings
        where = f"{settings.smtp_server}:{settings.smtp_port}"
        outcome = self.outcome
        retried = "; the export is retried on the next run" if outcome is MailOutcome.REFUSED else ""
        if self.expired == "stopped":
            return mail_error(
                settings,
                "stopped",
                f"Stopped during {self.what} with the SMTP server {where} "
                f"(wa-export was asked to stop while waiting for {self.waiting_for})",
                f"Nothing else is sent in this run{retried}.",
                outcome=outcome,
            )
        hint = "It may be overloaded or misbehaving: check its logs, or raise SMTP_TIMEOUT_SECONDS if it is only slow"
        if self.step == "connect" and self.waiting_for in (WAITING_FOR_CONNECTION, WAITING_FOR_GREETING):
            hint = (
                "Check SMTP_SERVER/SMTP_PORT, the firewall, and that SMTP_SECURITY matches the port "
                "(465 = ssl); the server may also be overloaded"
            )
        return mail_error(
            settings,
            self.step,
            f"The SMTP server {where} did not finish {self.what} within SMTP_TIMEOUT_SECONDS "
            f"({self.seconds:g} s): timed out waiting for {self.waiting_for}",
            f"{hint}{retried}." if self.step == "timeout" else f"{hint}.",
            outcome=outcome,
        )
