"""Cutting a window into parts: consecutive messages in arrival order, each one email.

A part is a half-open arrival-key range [low, high). The first part starts at
the cursor, each next one at the key of its first message, the last ends at the
run's end key, so the parts cover the window exactly and moving the cursor to
a part's `high` passes exactly the messages that part delivered.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from wa_export.store.arrivals import Key

# When a part's attachment is too big, it is cut to this share of the rows that
# would just fit, so one rewrite is nearly always enough.
SIZE_SAFETY = 0.9


@dataclass(frozen=True)
class Part:
    low: Key  # inclusive
    high: Key  # exclusive
    count: int  # messages in it when the keys were read


def cut_parts(keys: Iterable[Key], low: Key, high: Key, max_rows: int) -> list[Part]:
    """Parts of at most `max_rows` messages from the window's keys (ascending) in [low, high).

    Messages sharing a key (a date arrival field written in the same millisecond)
    stay in one part, since a boundary between equal keys could not separate them.
    """
    parts: list[Part] = []
    count = 0
    start = low
    previous: Key | None = None
    for key in keys:
        if count >= max_rows and key != previous:
            parts.append(Part(start, key, count))
            start, count = key, 0
        count += 1
        previous = key
    if count:
        parts.append(Part(start, high, count))
    return parts


def rows_that_fit(count: int, encoded_size: int, limit: int) -> int:
    """How many of a too-big part's `count` rows to put in each smaller part (at least 1, fewer than `count`)."""
    estimate = int(count * limit / max(encoded_size, 1) * SIZE_SAFETY)
    return max(1, min(estimate, count // 2 if count > 1 else 1))


__all__ = ["Part", "cut_parts", "rows_that_fit"]
