"""Sizes, ages, local times and counted nouns, one formatter each for every command."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from wa_export.clock import MINUTE_FORMAT, format_local

if TYPE_CHECKING:  # settings imports pymongo; cli/app.py imports this module at start-up
    from wa_export.settings import Settings

LOG_STAMP = "iso"  # local_time's format for log line stamps: ISO 8601 with the zone's offset
NAMES_SHOWN = 10  # longer lists are cut in a sentence; --json has them all


def format_bytes(size: float) -> str:  # 1536 -> '1.5 KiB', as `du -h` prints it
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024:
            return f"{amount:.0f} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def count_or_zero(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def format_age(delta: timedelta) -> str:  # how long ago, coarsely: '45 s', '12 min', '3 h 5 min', '4 days'
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60 * 120:
        return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min"
    hours = seconds // 3600
    return f"{hours} h {seconds // 60 % 60} min" if hours < 48 else count_noun(hours // 24, "day")


def format_ago(delta: timedelta) -> str:
    return "less than a minute ago" if delta < timedelta(minutes=1) else f"{format_age(delta)} ago"


def local_time(moment: datetime | None, where: Settings | tzinfo, fmt: str = MINUTE_FORMAT, zoned: bool = False) -> str:
    """In EXPORT_TIMEZONE or the zone given; `zoned` appends the zone's name (Asia/Kolkata, else UTC+05:30)."""
    zone = where if isinstance(where, tzinfo) else where.export_timezone
    if moment is not None and fmt == LOG_STAMP:
        return moment.astimezone(zone).isoformat(timespec="seconds")
    text = format_local(moment, zone, fmt)
    return f"{text} {getattr(zone, 'key', None) or zone.tzname(None)}" if text and zoned else text


def count_noun(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def named(items: Sequence[str], shown: int = NAMES_SHOWN) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def workspace_label(name: object, workspace_id: object) -> str:
    return f"{name or '(unnamed)'} ({workspace_id})"


def has(number: int) -> str:
    return "has" if number == 1 else "have"


def is_(number: int) -> str:
    return "is" if number == 1 else "are"
