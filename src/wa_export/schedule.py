"""A workspace's time zone and delivery schedule, its slots and when it is due (docs/design.md, "Schedules").
All arithmetic is on aware UTC datetimes; local wall times are only converted, never added to."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

SCHEDULE_FORMS = "every, hourly, daily@HH:MM[,HH:MM…] such as daily@08:00,17:30, or off"
# Files in the zone database that are not zones: the host's own zone, and placeholders.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True)
class Schedule:
    kind: Literal["every", "hourly", "daily", "off"]
    times: tuple[time, ...] = ()  # daily: the local times, sorted, each once

    def __str__(self) -> str:  # what parse_schedule reads back, e.g. daily@08:00,17:30
        return self.kind if self.kind != "daily" else "daily@" + ",".join(t.strftime("%H:%M") for t in self.times)

    @property
    def has_slots(self) -> bool:  # every and off are decided without time
        return self.kind in ("hourly", "daily")

    def latest_slot(self, moment: datetime, zone: ZoneInfo) -> datetime | None:  # at or before `moment`
        return max((slot for slot in self._slots_around(moment, zone) if slot <= moment), default=None)

    def next_slot(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        return min((slot for slot in self._slots_around(moment, zone) if slot > moment), default=None)

    def _slots_around(self, moment: datetime, zone: ZoneInfo) -> list[datetime]:
        # A slot of an earlier local date may be pushed past midnight by a gap: look two days either way.
        today = moment.astimezone(zone).date()
        return [slot for offset in range(-2, 3) for slot in slots_on(self, today + timedelta(days=offset), zone)]


EVERY = Schedule("every")
_WITHOUT_TIMES = {schedule.kind: schedule for schedule in (EVERY, Schedule("hourly"), Schedule("off"))}


@lru_cache(maxsize=4096)
def slots_on(schedule: Schedule, day: date, zone: ZoneInfo) -> tuple[datetime, ...]:
    """Sorted UTC instants. A time a gap skips is the first instant after the gap; a repeated daily time is its
    first occurrence, a repeated full hour both (each is a real hour)."""
    slots = set()
    for local in [time(hour) for hour in range(24)] if schedule.kind == "hourly" else schedule.times:
        wall = datetime.combine(day, local, tzinfo=zone)
        first, second = wall.astimezone(UTC), wall.replace(fold=1).astimezone(UTC)
        if first > second:  # a gap: fold 1 reads the wall time with the offset after it (an instant before it)
            after = first.astimezone(zone).utcoffset()
            seconds = range(int(second.timestamp()), int(first.timestamp()) + 1)  # tz data change on whole seconds
            jump = bisect.bisect_left(seconds, True, key=lambda s: datetime.fromtimestamp(s, zone).utcoffset() == after)
            first = second = datetime.fromtimestamp(seconds[jump], UTC)
        slots |= {first, second} if schedule.kind == "hourly" else {first}
    return tuple(sorted(slots))


def parse_schedule(text: str) -> Schedule:
    """Any case, spaces around the times; else ValueError completing "<value> …"."""
    written = text.strip().lower()
    if written in _WITHOUT_TIMES:
        return _WITHOUT_TIMES[written]
    kind, at, times = written.partition("@")
    if kind.strip() != "daily" or not at:
        raise ValueError(f"is not a schedule (use {SCHEDULE_FORMS})")
    parsed: set[time] = set()
    for entry in times.split(","):
        match = re.fullmatch(r"([0-9]{1,2}):([0-9]{2})", entry.strip())
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            shown = entry.strip() or "an empty time"
            raise ValueError(f"is not a schedule ({shown} is not a 24-hour local time HH:MM; use {SCHEDULE_FORMS})")
        parsed.add(time(int(match.group(1)), int(match.group(2))))
    return Schedule("daily", tuple(sorted(parsed)))


def parse_time_zone(text: str) -> ZoneInfo:
    """An IANA zone name (exact case), never a path nor a tz database file that is no zone."""
    written = text.strip()
    try:
        if written.startswith(("/", ".")) or ".." in written or written in _NOT_ZONES:
            raise ValueError(written)
        return ZoneInfo(written)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        meant = [zone for zone in available_timezones() - _NOT_ZONES if zone.lower() == written.lower()]
        example = f"did you mean {meant[0]}?" if meant else "e.g. UTC, Europe/Berlin, Asia/Dubai"
        raise ValueError(f"is not a known IANA time zone ({example})") from None


def schedule_identity(schedule: Schedule, zone: ZoneInfo) -> str:
    """What a served slot is recorded under: a new schedule (or zone) has served nothing, so is due at once."""
    return f"{schedule} {zone.key}"


@dataclass(frozen=True)
class ServedSlot:
    schedule: str  # the schedule_identity that served `slot`
    slot: datetime


@dataclass(frozen=True)
class Decision:
    due: bool  # a scheduled run delivers the workspace now
    slot: datetime | None = None  # the slot a delivery now serves, recorded with its cursor move
    next_due: datetime | None = None  # not due: the first slot at which it will be (None for off)


def decide(schedule: Schedule, zone: ZoneInfo, now: datetime, served: ServedSlot | None) -> Decision:
    """The due rule for a scheduled run at `now` (the database's clock)."""
    if not schedule.has_slots:
        return Decision(schedule.kind == "every")
    latest = schedule.latest_slot(now, zone)
    assert latest is not None  # hourly and daily have a slot every day
    if served is None or served.schedule != schedule_identity(schedule, zone) or served.slot < latest:
        return Decision(True, slot=latest)
    # Served up to `served.slot`, which a clock set back may place after now: due at the first slot after both.
    return Decision(False, next_due=schedule.next_slot(max(now, served.slot), zone))


def overdue_since(schedule: Schedule, zone: ZoneInfo, now: datetime, served: ServedSlot | None) -> datetime | None:
    """The first unserved slot once passed (`health`); None when not behind or it cannot say (every, off, a
    schedule that never served: judge by the last success)."""
    if not schedule.has_slots or served is None or served.schedule != schedule_identity(schedule, zone):
        return None
    first_unserved = schedule.next_slot(served.slot, zone)
    return first_unserved if first_unserved is not None and first_unserved <= now else None
