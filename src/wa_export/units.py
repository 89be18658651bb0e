"""Human-readable sizes and ages, one formatter each for every command."""

from __future__ import annotations

from datetime import timedelta


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
    if seconds < 60:
        return f"{seconds} s"
    minutes = seconds // 60
    if minutes < 120:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} days"


def format_ago(delta: timedelta) -> str:
    if delta < timedelta(minutes=1):
        return "less than a minute ago"
    return f"{format_age(delta)} ago"
