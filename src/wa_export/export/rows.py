"""Mapping of one message and its chat to a workbook row (SPEC §2).

This is the hot path of an export (once per message), so it works on plain
tuples and local variables, and defers text cleaning to the workbook writer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from bson import ObjectId

from wa_export.export.status import (
    STATUS_RECEIVED,
    STATUS_SENT_BY_HUMAN,
    STATUS_SENT_VIA_AI,
    STATUS_UNKNOWN,
    normalized_direction,
)
from wa_export.store.connection import Chat

Row = tuple[object, object, object, "datetime | None", str, str]


class RowStats:
    """Per-status counts and data-quality anomalies of one export."""

    def __init__(self) -> None:
        self.by_status: Counter[str] = Counter()
        self.anomalies: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_status.values())


def message_rows(
    messages: Iterable[dict[str, Any]],
    chats: dict[ObjectId, Chat],
    workspace_id: str,
    stats: RowStats,
    every_10000: Callable[[], None] | None = None,
) -> Iterator[Row]:
    """Rows for messages of the given chats; a message whose chat is unknown is skipped and counted."""
    by_status = stats.by_status
    anomalies = stats.anomalies
    seen = 0
    for message in messages:
        seen += 1
        if every_10000 is not None and seen % 10_000 == 0:
            every_10000()
        chat = chats.get(message.get("chat_id"))  # type: ignore[arg-type]
        if chat is None:
            anomalies["orphaned_message"] += 1
            continue
        workspace_phone = chat.phone_number
        customer_phone = chat.customer_phone
        if not workspace_phone or not customer_phone:
            anomalies["missing_phone"] += 1
        direction = message.get("direction")
        if direction != "incoming" and direction != "outgoing":  # the exact spellings skip the call
            direction = normalized_direction(direction)
        if direction == "incoming":
            status = STATUS_RECEIVED
            sender, receiver = customer_phone, workspace_phone
        elif direction == "outgoing":
            status = STATUS_SENT_VIA_AI if message.get("is_ai_generated") is True else STATUS_SENT_BY_HUMAN
            sender, receiver = workspace_phone, customer_phone
        else:
            # We cannot tell who sent it: keep the row (nothing is dropped) but
            # do not guess the direction; the counts report it.
            status = STATUS_UNKNOWN
            sender, receiver = None, None
            anomalies["unknown_direction"] += 1
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            anomalies["non_text_content"] += 1
        timestamp = message.get("timestamp")
        if not isinstance(timestamp, datetime):
            timestamp = None
        by_status[status] += 1
        yield (sender, receiver, content, timestamp, status, workspace_id)
