"""Human-readable sizes, ages, local times and counted nouns, one formatter each for every command."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from wa_export.clock import MINUTE_FORMAT, format_local

if TYPE_CHECKING:  # settings imports pymongo; cli/app.py imports this module at start-up
    from wa_export.settings import Settings


def format_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as `du -h` and `df -h` print them."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(amount) < 1024:
            return f"{amount:.0f} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} TiB"


def count_or_zero(value: object) -> int:
    """A count read from a document: an int (not a bool), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def format_age(delta: timedelta) -> str:
    """How long ago, coarsely: '45 s', '12 min', '3 h 5 min', '4 days'."""
    seconds = max(0, int(delta.total_seconds()))
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 60:
        return f"{seconds} s"
    if minutes < 120:
        return f"{minutes} min"
    return f"{hours} h {minutes % 60} min" if hours < 48 else f"{hours // 24} days"


def format_ago(delta: timedelta) -> str:
    return "less than a minute ago" if delta < timedelta(minutes=1) else f"{format_age(delta)} ago"


def local_time(moment: datetime | None, settings: Settings, fmt: str = MINUTE_FORMAT, zoned: bool = False) -> str:
    """`moment` in EXPORT_TIMEZONE ('' for none); `zoned` appends the zone's name."""
    text = format_local(moment, settings.export_timezone, fmt)
    return f"{text} {settings.timezone_name}" if text and zoned else text


def count_noun(number: int, noun: str) -> str:
    """ "1 failed export", "2 failed exports"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def has(number: int) -> str:
    return "has" if number == 1 else "have"


def is_(number: int) -> str:
    return "is" if number == 1 else "are"
