"""Time: aware UTC at BSON's millisecond precision, shown in EXPORT_TIMEZONE; one thread for every timed callback."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from functools import partial

from wa_export.errors import UsageProblem

MINUTE_FORMAT = "%Y-%m-%d %H:%M"
SECOND_FORMAT = "%Y-%m-%d %H:%M:%S"


def to_millis(moment: datetime) -> datetime:  # BSON dates hold milliseconds
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def utc_now() -> datetime:
    return to_millis(datetime.now(UTC))


def as_utc(moment: datetime) -> datetime:  # pymongo returns naive UTC datetimes
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_utc_or_none(value: object) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def format_local(moment: datetime | None, zone: tzinfo, fmt: str = MINUTE_FORMAT) -> str:
    return "" if moment is None else moment.astimezone(zone).strftime(fmt)


def parse_time(text: str, option: str, zone: tzinfo) -> datetime:  # ISO 8601, naive in `zone`, as aware UTC
    raw = text.strip()
    try:
        moment = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith(("Z", "z")) else raw)
    except ValueError:
        raise UsageProblem(
            f"{option} {text!r} is not an ISO 8601 time; use e.g. 2026-01-15T14:30 or 2026-01-15T14:30:00+02:00."
        ) from None
    try:
        moment = (moment.replace(tzinfo=zone) if moment.tzinfo is None else moment).astimezone(UTC)
    except OverflowError:
        moment = datetime.min.replace(tzinfo=UTC)  # reported just below
    if not datetime(1970, 1, 1, tzinfo=UTC) <= moment <= datetime(9000, 1, 1, tzinfo=UTC):
        raise UsageProblem(f"{option} {text!r} is out of range; use a time between 1970 and 9000.")
    return to_millis(moment)


class DatabaseClock:  # the database server's time, read once, advanced by time.monotonic()
    def __init__(self, database_now: datetime) -> None:
        self.started_at = database_now
        self._started_monotonic = time.monotonic()

    def now(self) -> datetime:
        return to_millis(self.started_at + timedelta(seconds=time.monotonic() - self._started_monotonic))


@dataclass(frozen=True)
class Window:  # [start, end) in UTC: a manual export
    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.end <= self.start


@dataclass(eq=False)  # by identity: remove() must find this timer, not an equal one
class Timer:
    """`fire()` runs once `due()` (monotonic) has passed, returns the next due time or None; `poll` caps the sleep."""

    due: Callable[[], float]
    fire: Callable[[], float | None]
    poll: float | None = None


class TimerThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self._condition = threading.Condition()
        self._timers: list[Timer] = []
        self._thread: threading.Thread | None = None

    def add(self, timer: Timer) -> Timer:
        with self._condition:
            self._timers.append(timer)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self._condition.notify()
        return timer

    def remove(self, timer: Timer) -> None:
        """Disarm `timer`; once this returns, its callback is not running and never runs again."""
        with self._condition:
            if timer in self._timers:
                self._timers.remove(timer)
            self._condition.notify()

    def _run(self) -> None:
        with self._condition:  # held while a callback runs: remove() waits for it, so none outlives its owner
            while True:
                for timer in [timer for timer in self._timers if timer.due() <= time.monotonic()]:
                    try:
                        again = timer.fire()
                    except Exception:  # a callback's failure must not stop every other timer
                        again = None
                    if again is None:
                        self._timers.remove(timer)
                    else:
                        timer.due = partial(float, again)  # armed again: due at the time fire() returned
                now = time.monotonic()
                waits = [timer.due() - now for timer in self._timers] + [t.poll for t in self._timers if t.poll]
                self._condition.wait(min(waits, default=None))
