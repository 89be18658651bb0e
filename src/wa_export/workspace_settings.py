"""A workspace's own clock: its zone and schedule (slots, when due; UTC arithmetic, wall times only converted), and
the one resolver of a per-workspace setting: WORKSPACE_<ID>_<SUFFIX>, else its document's field, else the default."""

from __future__ import annotations

import bisect
import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

if TYPE_CHECKING:  # settings imports this module (its registry's parsers)
    from wa_export.settings import Settings
    from wa_export.store.connection import Workspace

SCHEDULE_FORMS = "every, hourly, daily@HH:MM[,HH:MM…] such as daily@08:00,17:30, or off"
# Files in the zone database that are not zones: the host's own zone, and placeholders.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


@dataclass(frozen=True)
class Schedule:
    kind: Literal["every", "hourly", "daily", "off"]
    times: tuple[time, ...] = ()  # daily: the local times, sorted, each once

    def __str__(self) -> str:  # what parse_schedule reads back, e.g. daily@08:00,17:30
        return self.kind if self.kind != "daily" else "daily@" + ",".join(t.strftime("%H:%M") for t in self.times)

    def identity(self, zone: ZoneInfo) -> str:  # a served slot's; a new schedule (or zone) served nothing: due at once
        return f"{self} {zone.key}"

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


@lru_cache(maxsize=4096)  # tenants share few zones and schedules: each is parsed once per process
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


@lru_cache(maxsize=4096)
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


@dataclass(frozen=True)
class ServedSlot:
    schedule: str  # the Schedule.identity that served `slot`
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
    if served is None or served.schedule != schedule.identity(zone) or served.slot < latest:
        return Decision(True, slot=latest)
    # Served up to `served.slot`, which a clock set back may place after now: due at the first slot after both.
    return Decision(False, next_due=schedule.next_slot(max(now, served.slot), zone))


def overdue_since(schedule: Schedule, zone: ZoneInfo, now: datetime, served: ServedSlot | None) -> datetime | None:
    """The first unserved slot once passed (`health`); None when not behind or unknown (every, off, never served)."""
    if not schedule.has_slots or served is None or served.schedule != schedule.identity(zone):
        return None
    first_unserved = schedule.next_slot(served.slot, zone)
    return first_unserved if first_unserved is not None and first_unserved <= now else None


T = TypeVar("T")


@dataclass(frozen=True)
class WorkspaceSetting(Generic[T]):
    suffix: str  # WORKSPACE_<ID>_<suffix>
    field_setting: str  # the setting naming its document field, e.g. EXPORT_SCHEDULE_FIELD
    kind: type[T]  # what `parse` returns
    parse: Callable[[str], T]  # a variable's or field's string -> value; ValueError completing "<value> …"
    default: Callable[[Any], T | None]  # from the Settings: the global value, or None for none
    default_origin: str  # how `stats`/`config` name the default, e.g. EXPORT_TIMEZONE
    secret: bool = False  # a password: masked by `config`, redacted from every text, never quoted
    fails_workspace_only: bool = False  # an invalid variable fails its workspace alone, not the configuration
    quoted: bool = True  # unless secret, an invalid value is quoted in its sentence (not a list of addresses)


@dataclass(frozen=True)
class Resolved(Generic[T]):
    value: T | None
    source: Literal["environment", "database", "default"]
    origin: str  # the variable, the document field's path, or the default's name
    problem: str | None = None

    @property
    def where(self) -> str:  # as `stats` and `config` say it
        kind = {"environment": "environment variable", "database": "workspace field"}.get(self.source)
        return f"{kind} {self.origin}" if kind else f"default ({self.origin})"

    def as_dict(self, *, secret: bool = False) -> dict[str, Any]:
        shown = None if self.value is None else ("set" if secret else str(self.value))
        return {"value": shown, "source": self.source, "origin": self.origin, "problem": self.problem}


def resolve(setting: WorkspaceSetting[T], workspace: Workspace, settings: Settings) -> Resolved[T]:
    """Its variable, else its document field (missing, null or blank: unset), else the default; a `problem` fails it."""
    variable = f"WORKSPACE_{workspace.id}_{setting.suffix}"
    if (problem := settings.workspace_variable_problem(workspace.id, setting.suffix)) is not None:
        return Resolved(None, "environment", variable, problem)
    if isinstance(configured := settings.workspace_variable(workspace.id, setting.suffix), setting.kind):
        return Resolved(configured, "environment", variable)
    # The list holds a value only for a configured field: the common case asks nothing more.
    raw = workspace.document_values.get(setting.field_setting)
    path = settings.document_fields().get(setting.field_setting) if raw is not None else None
    if path is None or raw is None or (isinstance(raw, str) and not raw.strip()):
        return Resolved(setting.default(settings), "default", setting.default_origin)
    where, fix = f"{path} of workspace {workspace.id}", f"fix it in the platform or set {variable}"
    if not isinstance(raw, str):
        problem = f"{where} holds a value of type {type(raw).__name__}, not a string; {fix}."
        return Resolved(None, "database", path, problem)
    try:
        return Resolved(setting.parse(raw), "database", path)
    except ValueError as error:
        shown = shown_value(raw) if setting.quoted and not setting.secret else "a value"
        return Resolved(None, "database", path, f"{where} holds {shown}, which {error}; {fix}.")


# The workspace's zone: its Timestamp cells, file names, email text and schedule times.
TIME_ZONE = WorkspaceSetting(
    "TIMEZONE", "EXPORT_TIMEZONE_FIELD", ZoneInfo, parse_time_zone, lambda s: s.export_timezone, "EXPORT_TIMEZONE"
)
# When scheduled runs deliver the workspace.
SCHEDULE = WorkspaceSetting("SCHEDULE", "EXPORT_SCHEDULE_FIELD", Schedule, parse_schedule, lambda _: EVERY, "every")


def in_zone(settings: Settings, zone: ZoneInfo) -> Settings:
    """Its zone in place of EXPORT_TIMEZONE, which every writer reads."""
    return settings if zone == settings.export_timezone else dataclasses.replace(settings, export_timezone=zone)


def shown_value(text: str) -> str:  # quoted; a hostile one is cut, not echoed whole
    text = text.strip()
    return repr(text if len(text) <= 80 else text[:80] + "…")
