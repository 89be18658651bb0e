"""Mapping of one message and its chat to a workbook row (the Status rule is export/status.py's).

This is the hot path of an export (once per message), so it works on plain
tuples and local variables, and defers text cleaning to the workbook writer.
Messy data is exported and counted, never dropped: a `timestamp` stored as an
ISO 8601 string or an epoch number becomes a real date (counted
`non_date_timestamp`), a missing or unreadable one an empty cell (counted
`unparsed_timestamp`); a `chat_id` stored as a string is counted `string_chat_id`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from wa_export.export.status import STATUS_RECEIVED, STATUS_UNKNOWN, status_of
from wa_export.store.connection import Chat

Row = tuple[object, object, object, "datetime | None", str, str]
# Epoch numbers above this are milliseconds (10^11 seconds is the year 5138).
EPOCH_MILLISECONDS_ABOVE = 10**11


class RowStats:
    """Per-status counts and data-quality anomalies of one export."""

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def parse_timestamp(value: object) -> datetime | None:
    """A message `timestamp` that is not a BSON date, as a date if it can be read: ISO 8601 text
    (naive means UTC) or an epoch number (seconds, or milliseconds above 10^11); else None."""
    try:
        if isinstance(value, str):
            text = value.strip()
            if text[-1:] in ("Z", "z"):
                text = text[:-1] + "+00:00"
            moment = datetime.fromisoformat(text)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = value / 1000 if abs(value) > EPOCH_MILLISECONDS_ABOVE else value
            return datetime.fromtimestamp(seconds, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def message_rows(
    messages: Iterable[dict[str, Any]],
    chats: Mapping[object, Chat],
    workspace_id: str,
    stats: RowStats,
    every_10000: Callable[[], None] | None = None,
) -> Iterator[Row]:
    """Rows for messages of the given chats (keyed by id, in every form a message may use);
    a message whose chat is unknown is skipped and counted."""
    by_status = stats.by_status
    anomalies = stats.anomalies
    seen = 0
    for message in messages:
        seen += 1
        if every_10000 is not None and seen % 10_000 == 0:
            every_10000()
        chat_id = message.get("chat_id")
        chat = chats.get(chat_id)
        if chat is None:
            anomalies["orphaned_message"] += 1
            continue
        if isinstance(chat_id, str):
            anomalies["string_chat_id"] += 1
        workspace_phone = chat.phone_number
        customer_phone = chat.customer_phone
        if not workspace_phone or not customer_phone:
            anomalies["missing_phone"] += 1
        status = status_of(message.get("direction"), message.get("is_ai_generated"))
        if status == STATUS_RECEIVED:
            sender, receiver = customer_phone, workspace_phone
        elif status == STATUS_UNKNOWN:
            # We cannot tell who sent it: keep the row (nothing is dropped) but
            # do not guess the direction; the counts report it.
            sender, receiver = None, None
            anomalies["unknown_direction"] += 1
        else:
            sender, receiver = workspace_phone, customer_phone
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            anomalies["non_text_content"] += 1
        timestamp = message.get("timestamp")
        if not isinstance(timestamp, datetime):
            timestamp = parse_timestamp(timestamp)
            anomalies["unparsed_timestamp" if timestamp is None else "non_date_timestamp"] += 1
        by_status[status] += 1
        yield (sender, receiver, content, timestamp, status, workspace_id)
