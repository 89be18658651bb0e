"""The schedule rule alone: parsing, slots in a zone, the due decision, daylight-saving days."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from wa_export.workspace_settings import (
    EVERY,
    Schedule,
    ServedSlot,
    decide,
    overdue_since,
    parse_schedule,
    parse_time_zone,
    slots_on,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local(zone: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int, *, fold: int = 0) -> datetime:
    """A wall time of `zone` as the UTC instant it is (fold 1: the second of a repeated time)."""
    return datetime(year, month, day, hour, minute, tzinfo=zone, fold=fold).astimezone(UTC)


def served(schedule: Schedule, zone: ZoneInfo, slot: datetime) -> ServedSlot:
    return ServedSlot(schedule.identity(zone), slot)


def slots_between(schedule: Schedule, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Every slot in (start, end], walked with next_slot."""
    found: list[datetime] = []
    moment = start
    while (slot := schedule.next_slot(moment, zone)) is not None and slot <= end:
        found.append(slot)
        moment = slot
    return found


# ---- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("every", "every"),
        ("Hourly", "hourly"),
        (" OFF ", "off"),
        ("daily@08:00", "daily@08:00"),
        ("daily@17:30, 8:00,08:00", "daily@08:00,17:30"),
        ("DAILY@23:59", "daily@23:59"),
        ("daily@00:00", "daily@00:00"),
    ],
)
def test_schedules_parse_to_their_canonical_spelling(written: str, canonical: str) -> None:
    schedule = parse_schedule(written)
    assert str(schedule) == canonical
    assert parse_schedule(canonical) == schedule


def test_daily_times_are_kept_sorted_and_once() -> None:
    assert parse_schedule("daily@18:00,07:05,18:00").times == (time(7, 5), time(18))


@pytest.mark.parametrize(
    ("written", "named"),
    [
        ("sometimes", None),
        ("daily", None),
        ("daily@", "an empty time"),
        ("daily@08:00,", "an empty time"),
        ("daily@24:00", "24:00"),
        ("daily@12:60", "12:60"),
        ("daily@8", "8"),
        ("daily@08:00:00", "08:00:00"),
        ("daily@٠٨:٠٠", "٠٨:٠٠"),
        ("hourly@10:00", None),
        ("weekly@mon", None),
        ("", None),
    ],
)
def test_an_invalid_schedule_says_why_and_what_to_write(written: str, named: str | None) -> None:
    with pytest.raises(ValueError) as raised:
        parse_schedule(written)
    clause = str(raised.value)
    assert clause.startswith("is not a schedule (")
    assert "every, hourly, daily@HH:MM[,HH:MM…] such as daily@08:00,17:30, or off" in clause
    if named is not None:
        assert f"({named} is not a 24-hour local time HH:MM" in clause


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", " Asia/Kolkata "])
def test_known_time_zones_parse(name: str) -> None:
    assert parse_time_zone(name).key == name.strip()


@pytest.mark.parametrize(
    ("name", "advice"),
    [
        ("Mars/Olympus_Mons", "e.g. UTC, Europe/Berlin, Asia/Dubai"),
        ("europe/berlin", "did you mean Europe/Berlin?"),
        ("", "e.g. UTC"),
        ("../etc/passwd", "e.g. UTC"),
        ("/etc/localtime", "e.g. UTC"),
        ("localtime", "e.g. UTC"),
        ("Europe/", "e.g. UTC"),
    ],
)
def test_an_unknown_time_zone_is_refused(name: str, advice: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_time_zone(name)
    assert str(raised.value).startswith(f"is not a known IANA time zone ({advice}")


# ---- slots ---------------------------------------------------------------------------------------


def test_hourly_slots_sit_on_each_full_hour_and_its_boundary_belongs_to_the_new_hour() -> None:
    hourly = parse_schedule("hourly")
    zone = ZoneInfo("UTC")
    assert hourly.latest_slot(utc(2026, 6, 1, 10, 59, 59), zone) == utc(2026, 6, 1, 10)
    assert hourly.latest_slot(utc(2026, 6, 1, 11), zone) == utc(2026, 6, 1, 11)
    assert hourly.next_slot(utc(2026, 6, 1, 11), zone) == utc(2026, 6, 1, 12)
    assert hourly.next_slot(utc(2026, 6, 1, 23, 30), zone) == utc(2026, 6, 2)


def test_hourly_follows_the_zones_own_full_hours() -> None:
    hourly = parse_schedule("hourly")
    # Kolkata is UTC+05:30: its full hours fall at half past in UTC.
    assert hourly.latest_slot(utc(2026, 6, 1, 10, 29), KOLKATA) == utc(2026, 6, 1, 9, 30)
    assert hourly.next_slot(utc(2026, 6, 1, 10, 29), KOLKATA) == utc(2026, 6, 1, 10, 30)


def test_several_daily_slots_in_a_zone() -> None:
    daily = parse_schedule("daily@08:00,12:30,18:00")
    assert daily.latest_slot(local(BERLIN, 2026, 1, 15, 13, 0), BERLIN) == local(BERLIN, 2026, 1, 15, 12, 30)
    assert daily.next_slot(local(BERLIN, 2026, 1, 15, 13, 0), BERLIN) == local(BERLIN, 2026, 1, 15, 18, 0)
    # Before the first time of the day: yesterday's last slot, and today's first next.
    assert daily.latest_slot(local(BERLIN, 2026, 1, 15, 7, 0), BERLIN) == local(BERLIN, 2026, 1, 14, 18, 0)
    assert daily.next_slot(local(BERLIN, 2026, 1, 15, 7, 0), BERLIN) == local(BERLIN, 2026, 1, 15, 8, 0)
    # A slot is its own latest slot (at or before), and not its own next (strictly after).
    slot = local(BERLIN, 2026, 1, 15, 8, 0)
    assert daily.latest_slot(slot, BERLIN) == slot
    assert daily.next_slot(slot, BERLIN) == local(BERLIN, 2026, 1, 15, 12, 30)
    assert slots_on(daily, date(2026, 1, 15), BERLIN) == (
        utc(2026, 1, 15, 7),
        utc(2026, 1, 15, 11, 30),
        utc(2026, 1, 15, 17),
    )


def test_every_and_off_have_no_slots() -> None:
    for schedule in (EVERY, parse_schedule("off")):
        assert not schedule.has_slots
        assert schedule.latest_slot(utc(2026, 6, 1), BERLIN) is None
        assert schedule.next_slot(utc(2026, 6, 1), BERLIN) is None
        assert slots_on(schedule, date(2026, 6, 1), BERLIN) == ()


# ---- daylight saving: neither skipped nor doubled -------------------------------------------------


def test_berlin_spring_forward_a_daily_time_in_the_gap_is_the_first_instant_after_it() -> None:
    # 2026-03-29 (last Sunday of March): 02:00 CET jumps to 03:00 CEST, at 01:00 UTC.
    daily = parse_schedule("daily@02:30")
    assert slots_on(daily, date(2026, 3, 29), BERLIN) == (utc(2026, 3, 29, 1),)
    walked = slots_between(daily, BERLIN, utc(2026, 3, 26), utc(2026, 4, 1))
    assert walked == [
        utc(2026, 3, 26, 1, 30),  # 02:30 CET
        utc(2026, 3, 27, 1, 30),
        utc(2026, 3, 28, 1, 30),
        utc(2026, 3, 29, 1, 0),  # no 02:30 that day: 03:00 CEST, the first instant after the gap
        utc(2026, 3, 30, 0, 30),  # 02:30 CEST
        utc(2026, 3, 31, 0, 30),
    ]


def test_berlin_spring_forward_two_times_that_meet_after_the_gap_are_one_slot() -> None:
    daily = parse_schedule("daily@02:30,03:00")
    assert slots_on(daily, date(2026, 3, 29), BERLIN) == (utc(2026, 3, 29, 1),)
    assert len(slots_on(daily, date(2026, 3, 30), BERLIN)) == 2


def test_berlin_fall_back_a_repeated_daily_time_is_served_once() -> None:
    # 2026-10-25 (last Sunday of October): 03:00 CEST goes back to 02:00 CET, at 01:00 UTC; 02:30 happens twice.
    daily = parse_schedule("daily@02:30")
    first_occurrence = local(BERLIN, 2026, 10, 25, 2, 30)
    assert first_occurrence == utc(2026, 10, 25, 0, 30)
    assert slots_on(daily, date(2026, 10, 25), BERLIN) == (first_occurrence,)
    walked = slots_between(daily, BERLIN, utc(2026, 10, 23), utc(2026, 10, 28))
    assert walked == [
        utc(2026, 10, 23, 0, 30),  # 02:30 CEST
        utc(2026, 10, 24, 0, 30),
        first_occurrence,
        utc(2026, 10, 26, 1, 30),  # 02:30 CET
        utc(2026, 10, 27, 1, 30),
    ]
    # Served at its first occurrence, the second 02:30 (CET) is not due again.
    second_occurrence = local(BERLIN, 2026, 10, 25, 2, 45, fold=1)
    assert second_occurrence == utc(2026, 10, 25, 1, 45)
    decision = decide(daily, BERLIN, second_occurrence, served(daily, BERLIN, first_occurrence))
    assert not decision.due
    assert decision.next_due == utc(2026, 10, 26, 1, 30)


@pytest.mark.parametrize(
    ("start", "end"), [(utc(2026, 3, 28, 21), utc(2026, 3, 29, 5)), (utc(2026, 10, 24, 21), utc(2026, 10, 25, 5))]
)
def test_berlin_hourly_has_one_slot_per_real_hour_across_both_changes(start: datetime, end: datetime) -> None:
    # Spring forward: local 02:00 does not exist, its slot is 03:00 CEST; fall back: both 02:00s are real hours.
    walked = slots_between(parse_schedule("hourly"), BERLIN, start, end)
    assert walked == [start + timedelta(hours=hours) for hours in range(1, 9)]


def first_instant_showing(day: date, wanted: time, zone: ZoneInfo) -> datetime:
    """The slot by its definition, found by scanning the day minute by minute: the first instant at which the
    zone's clock shows `wanted` or later on `day` (the first occurrence of a repeated time; the end of a gap)."""
    target = datetime.combine(day, wanted)
    moment = datetime.combine(day, time(), tzinfo=UTC) - timedelta(hours=15)
    while moment.astimezone(zone).replace(tzinfo=None) < target:
        moment += timedelta(minutes=1)
    return moment


@pytest.mark.parametrize("written", ["daily@02:30", "daily@00:00,02:00,02:59,03:00,23:59", "daily@01:30"])
@pytest.mark.parametrize("zone", [BERLIN, NEW_YORK, ZoneInfo("Australia/Lord_Howe")])
def test_a_whole_year_of_daily_slots_has_each_time_once_per_local_day(written: str, zone: ZoneInfo) -> None:
    daily = parse_schedule(written)
    expected: set[datetime] = set()
    for day in (date(2026, 1, 1) + timedelta(days=n) for n in range(365)):
        midnight, next_midnight = (datetime.combine(d, time(), tzinfo=zone) for d in (day, day + timedelta(days=1)))
        changes_offset = midnight.utcoffset() != next_midnight.utcoffset()
        for wanted in daily.times:
            plain = datetime.combine(day, wanted, tzinfo=zone).astimezone(UTC)
            expected.add(first_instant_showing(day, wanted, zone) if changes_offset else plain)
    start, end = min(expected) - timedelta(seconds=1), max(expected)
    assert slots_between(daily, zone, start, end) == sorted(expected)


def test_new_york_spring_forward_and_fall_back() -> None:
    # 2026-03-08: 02:00 EST -> 03:00 EDT at 07:00 UTC; 2026-11-01: 02:00 EDT -> 01:00 EST at 06:00 UTC.
    assert slots_on(parse_schedule("daily@02:15"), date(2026, 3, 8), NEW_YORK) == (utc(2026, 3, 8, 7),)
    assert slots_on(parse_schedule("daily@01:30"), date(2026, 11, 1), NEW_YORK) == (utc(2026, 11, 1, 5, 30),)
    hourly = parse_schedule("hourly")
    assert slots_between(hourly, NEW_YORK, utc(2026, 3, 8, 5), utc(2026, 3, 8, 9)) == [
        utc(2026, 3, 8, 6),  # 01:00 EST
        utc(2026, 3, 8, 7),  # 03:00 EDT (02:00 does not exist: the same instant)
        utc(2026, 3, 8, 8),
        utc(2026, 3, 8, 9),
    ]
    assert slots_between(hourly, NEW_YORK, utc(2026, 11, 1, 3), utc(2026, 11, 1, 7)) == [
        utc(2026, 11, 1, 4),  # 00:00 EDT
        utc(2026, 11, 1, 5),  # 01:00 EDT
        utc(2026, 11, 1, 6),  # 01:00 EST, the repeated hour
        utc(2026, 11, 1, 7),  # 02:00 EST
    ]


# ---- the due rule --------------------------------------------------------------------------------


def test_every_is_always_due_and_off_never() -> None:
    now = utc(2026, 6, 1, 12)
    assert decide(EVERY, BERLIN, now, None).due
    assert decide(EVERY, BERLIN, now, ServedSlot("every Europe/Berlin", now)).due
    off = decide(parse_schedule("off"), BERLIN, now, None)
    assert not off.due
    assert off.next_due is None


def test_a_schedule_never_served_is_due_at_once_for_its_latest_slot() -> None:
    daily = parse_schedule("daily@18:00")
    now = local(BERLIN, 2026, 6, 1, 10, 0)
    decision = decide(daily, BERLIN, now, None)
    assert decision.due
    assert decision.slot == local(BERLIN, 2026, 5, 31, 18, 0)


def test_a_served_slot_is_not_due_until_the_next_slot() -> None:
    hourly = parse_schedule("hourly")
    zone = ZoneInfo("UTC")
    mark = served(hourly, zone, utc(2026, 6, 1, 10))
    waiting = decide(hourly, zone, utc(2026, 6, 1, 10, 59, 59), mark)
    assert not waiting.due
    assert waiting.next_due == utc(2026, 6, 1, 11)
    assert waiting.slot is None
    boundary = decide(hourly, zone, utc(2026, 6, 1, 11), mark)
    assert boundary.due
    assert boundary.slot == utc(2026, 6, 1, 11)
    # A slot missed entirely (no run in the 11:00 hour) is served by the next run, once.
    assert decide(hourly, zone, utc(2026, 6, 1, 12, 20), mark).slot == utc(2026, 6, 1, 12)


def test_changing_to_a_later_slot_that_already_passed_is_due() -> None:
    nine, ten = parse_schedule("daily@09:00"), parse_schedule("daily@10:00")
    now = local(BERLIN, 2026, 6, 1, 11, 0)
    mark = served(nine, BERLIN, local(BERLIN, 2026, 6, 1, 9, 0))
    assert not decide(nine, BERLIN, now, mark).due
    decision = decide(ten, BERLIN, now, mark)
    assert decision.due
    assert decision.slot == local(BERLIN, 2026, 6, 1, 10, 0)
    # Once served, the new schedule waits for its next slot.
    after = decide(ten, BERLIN, now + timedelta(minutes=15), served(ten, BERLIN, decision.slot))
    assert not after.due
    assert after.next_due == local(BERLIN, 2026, 6, 2, 10, 0)


def test_a_new_zone_or_schedule_is_due_at_once() -> None:
    daily = parse_schedule("daily@09:00")
    now = local(BERLIN, 2026, 6, 1, 11, 0)
    mark = served(daily, BERLIN, local(BERLIN, 2026, 6, 1, 9, 0))
    assert decide(daily, NEW_YORK, now, mark).due  # same wall time, other zone: other instants
    assert decide(parse_schedule("daily@08:00"), BERLIN, now, mark).due


def test_a_served_slot_ahead_of_now_waits_for_the_slot_after_it() -> None:
    # The database clock went back: what was served stays served.
    daily = parse_schedule("daily@09:00")
    mark = served(daily, BERLIN, local(BERLIN, 2026, 6, 2, 9, 0))
    decision = decide(daily, BERLIN, local(BERLIN, 2026, 6, 1, 20, 0), mark)
    assert not decision.due
    assert decision.next_due == local(BERLIN, 2026, 6, 3, 9, 0)


def test_overdue_since_is_the_first_slot_missed() -> None:
    daily = parse_schedule("daily@08:00,20:00")
    mark = served(daily, BERLIN, local(BERLIN, 2026, 6, 1, 8, 0))
    assert overdue_since(daily, BERLIN, local(BERLIN, 2026, 6, 1, 19, 59), mark) is None
    assert overdue_since(daily, BERLIN, local(BERLIN, 2026, 6, 2, 9, 0), mark) == local(BERLIN, 2026, 6, 1, 20, 0)
    # Nothing to judge by: every, off, and a schedule this workspace never served.
    now = local(BERLIN, 2026, 6, 9, 0, 0)
    assert overdue_since(EVERY, BERLIN, now, mark) is None
    assert overdue_since(parse_schedule("off"), BERLIN, now, mark) is None
    assert overdue_since(daily, BERLIN, now, None) is None
    assert overdue_since(parse_schedule("daily@08:00"), BERLIN, now, mark) is None
