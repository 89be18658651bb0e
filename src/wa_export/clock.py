"""Time: stored and compared as aware UTC at BSON's millisecond precision, shown in EXPORT_TIMEZONE."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from wa_export.errors import UsageProblem

MINUTE_FORMAT = "%Y-%m-%d %H:%M"
SECOND_FORMAT = "%Y-%m-%d %H:%M:%S"


def to_millis(moment: datetime) -> datetime:
    # BSON dates hold milliseconds.
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def utc_now() -> datetime:
    return to_millis(datetime.now(UTC))


def as_utc(moment: datetime) -> datetime:
    # pymongo returns naive UTC datetimes.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def as_utc_or_none(value: object) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def format_local(moment: datetime | None, zone: tzinfo, fmt: str = MINUTE_FORMAT) -> str:
    return "" if moment is None else moment.astimezone(zone).strftime(fmt)


def parse_time(text: str, option: str, zone: tzinfo) -> datetime:
    """ISO 8601, naive in `zone`, as aware UTC."""
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


class DatabaseClock:
    """The database server's time, read once, advanced by time.monotonic()."""

    def __init__(self, database_now: datetime) -> None:
        self.started_at = database_now
        self._started_monotonic = time.monotonic()

    def now(self) -> datetime:
        return to_millis(self.started_at + timedelta(seconds=time.monotonic() - self._started_monotonic))


@dataclass(frozen=True)
class Window:
    """[start, end) in UTC: a manual export."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.end <= self.start
