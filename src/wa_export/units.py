"""Human-readable sizes, one formatter for every command."""

from __future__ import annotations


def format_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'; binary units, as `du -h` and `df -h` print them."""
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{amount:.0f} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")


def count_or_zero(value: object) -> int:
    """A count read from a document: an int (not a bool), else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
