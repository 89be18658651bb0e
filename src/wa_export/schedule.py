"""A workspace's clock: its time zone, its delivery schedule, the schedule's slots and when it is due.

`every` is due on every scheduled run, `off` on none. `hourly` has a slot at each full hour of
the zone's clock, `daily@HH:MM[,HH:MM…]` one at each of those local times. A workspace is due
when the latest slot at or before now has not been served by this schedule (in this zone); one
this schedule never served is due at once (docs/design.md, "Schedules").

Daylight saving: a daily time that does not exist that day (spring forward) is the first
instant after the gap; one that happens twice (fall back) is its first occurrence, so each
daily time is served once per local day. An hourly slot is every instant the zone's clock
shows a full hour: the repeated hour of a fall-back day is a real hour and has its slot.
All arithmetic is on aware UTC datetimes; local wall times are only converted, never added to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

ScheduleKind = Literal["every", "hourly", "daily", "off"]
SCHEDULE_FORMS = "every, hourly, daily@HH:MM[,HH:MM…] such as daily@08:00,17:30, or off"
_LOCAL_TIME = re.compile(r"([0-9]{1,2}):([0-9]{2})")
_WITHOUT_TIMES: dict[str, ScheduleKind] = {"every": "every", "hourly": "hourly", "off": "off"}
# Files in the zone database that are not zones: the host's own zone, and placeholders.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True)
class Schedule:
    kind: ScheduleKind
    times: tuple[time, ...] = ()  # daily: the local times, sorted, each once

    @property
    def text(self) -> str:
        """The canonical spelling (what parse_schedule reads back), e.g. daily@08:00,17:30."""
        if self.kind != "daily":
            return self.kind
        return "daily@" + ",".join(moment.strftime("%H:%M") for moment in self.times)

    def __str__(self) -> str:
        return self.text

    @property
    def has_slots(self) -> bool:
        """hourly and daily: due by slot; every and off are decided without time."""
        return self.kind in ("hourly", "daily")

    def slots_on(self, day: date, zone: ZoneInfo) -> tuple[datetime, ...]:
        """The slots of this local date, as sorted UTC instants (empty for every and off)."""
        return _slots_on(self, day, zone)

    def latest_slot(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The latest slot at or before `moment` (UTC), or None for every and off."""
        if not self.has_slots:
            return None
        today = moment.astimezone(zone).date()
        # A slot of an earlier local date may be pushed past midnight by a gap: look two days back.
        candidates = [slot for offset in (0, 1, 2) for slot in self.slots_on(today - timedelta(days=offset), zone)]
        return max(slot for slot in candidates if slot <= moment)

    def next_slot(self, moment: datetime, zone: ZoneInfo) -> datetime | None:
        """The first slot after `moment` (UTC), or None for every and off."""
        if not self.has_slots:
            return None
        today = moment.astimezone(zone).date()
        candidates = [slot for offset in (-1, 0, 1, 2) for slot in self.slots_on(today + timedelta(days=offset), zone)]
        return min(slot for slot in candidates if slot > moment)


EVERY = Schedule("every")


def parse_schedule(text: str) -> Schedule:
    """A schedule as written (any case, spaces around the times); ValueError with a clause that
    completes "<value> …" (e.g. "is not a schedule (…)") when it is none."""
    written = text.strip().lower()
    simple = _WITHOUT_TIMES.get(written)
    if simple is not None:
        return Schedule(simple)
    kind, at, times = written.partition("@")
    if kind.strip() != "daily" or not at:
        raise ValueError(f"is not a schedule (use {SCHEDULE_FORMS})")
    parsed: set[time] = set()
    for entry in times.split(","):
        match = _LOCAL_TIME.fullmatch(entry.strip())
        if match is None or int(match.group(1)) > 23 or int(match.group(2)) > 59:
            shown = entry.strip() or "an empty time"
            raise ValueError(f"is not a schedule ({shown} is not a 24-hour local time HH:MM; use {SCHEDULE_FORMS})")
        parsed.add(time(int(match.group(1)), int(match.group(2))))
    return Schedule("daily", tuple(sorted(parsed)))


def parse_time_zone(text: str) -> ZoneInfo:
    """An IANA time zone name (exact case, as the tz database spells it); ValueError with a clause that
    completes "<value> …" when it is none. Never a path outside the tz database, nor a file in it that is
    no zone (the host's `localtime` would mean anything)."""
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
    """What a served slot is recorded under: a slot counts as served only for the schedule and zone
    that served it, so a new schedule (or zone) is due at once."""
    return f"{schedule.text} {zone.key}"


@dataclass(frozen=True)
class ServedSlot:
    """The latest slot served, and the schedule identity (schedule_identity) that served it."""

    schedule: str
    slot: datetime

    def covers(self, other: ServedSlot) -> bool:
        """Whether `other` is served once this is: the same schedule, and this slot at or after it."""
        return self.schedule == other.schedule and self.slot >= other.slot


@dataclass(frozen=True)
class Decision:
    """Whether a scheduled run delivers a workspace now."""

    due: bool
    # The slot a delivery now serves, to record with its cursor move (None for every, off and not due).
    slot: datetime | None = None
    # Not due: the first slot at which it will be (None for off, which never is).
    next_due: datetime | None = None


def decide(schedule: Schedule, zone: ZoneInfo, now: datetime, served: ServedSlot | None) -> Decision:
    """The due rule for a scheduled run at `now` (UTC, the database's clock); manual runs ignore schedules."""
    if schedule.kind == "every":
        return Decision(True)
    if schedule.kind == "off":
        return Decision(False)
    latest = schedule.latest_slot(now, zone)
    assert latest is not None  # hourly and daily have a slot every day
    if served is None or served.schedule != schedule_identity(schedule, zone) or served.slot < latest:
        return Decision(True, slot=latest)
    # Served up to `served.slot`, which a clock set back may place after now: due at the first slot after both.
    return Decision(False, next_due=schedule.next_slot(max(now, served.slot), zone))


def overdue_since(schedule: Schedule, zone: ZoneInfo, now: datetime, served: ServedSlot | None) -> datetime | None:
    """The first slot after the last one served, when it has passed unserved (for `health`); None when the
    schedule is not behind, or when it cannot say (every, or never served by this schedule: judge by the
    last success instead). off is never behind."""
    if not schedule.has_slots or served is None or served.schedule != schedule_identity(schedule, zone):
        return None
    first_unserved = schedule.next_slot(served.slot, zone)
    return first_unserved if first_unserved is not None and first_unserved <= now else None


@lru_cache(maxsize=4096)
def _slots_on(schedule: Schedule, day: date, zone: ZoneInfo) -> tuple[datetime, ...]:
    if schedule.kind == "hourly":
        slots = {slot for hour in range(24) for slot in _instants(day, time(hour), zone, both_folds=True)}
    elif schedule.kind == "daily":
        slots = {_instants(day, local, zone, both_folds=False)[0] for local in schedule.times}
    else:
        slots = set()
    return tuple(sorted(slots))


def _instants(day: date, local: time, zone: ZoneInfo, *, both_folds: bool) -> tuple[datetime, ...]:
    """The UTC instants at which the zone's clock shows `local` on `day`: usually one; a time skipped
    by a gap is the first instant after the gap; a repeated one is its first occurrence, or both."""
    wall = datetime.combine(day, local, tzinfo=zone)
    first, second = wall.astimezone(UTC), wall.replace(fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if first < second:  # ambiguous: fold 0 is the earlier occurrence
        return (first, second) if both_folds else (first,)
    # A gap: fold 1 reads the wall time with the offset after the transition (an instant before it),
    # fold 0 with the offset before (an instant after it). The clock jumps at the one change between.
    return (_transition_between(second, first, zone),)


def _transition_between(before: datetime, after: datetime, zone: ZoneInfo) -> datetime:
    """The first instant in (before, after] whose UTC offset is the one at `after` (tz data changes on
    whole seconds)."""
    target = after.astimezone(zone).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


__all__ = [
    "EVERY",
    "SCHEDULE_FORMS",
    "Decision",
    "Schedule",
    "ScheduleKind",
    "ServedSlot",
    "decide",
    "overdue_since",
    "parse_schedule",
    "parse_time_zone",
    "schedule_identity",
]
