"""A message and its chat as a workbook row (the hot path: plain tuples, text cleaning left to the writer), the Status
rule (shared with `stats`). Messy data is exported and counted, never dropped."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from wa_export.store import arrivals, ownership
from wa_export.store.arrivals import ArrivalKey, Key
from wa_export.store.connection import Chat, Store, Workspace

STATUS_RECEIVED = "received"
STATUS_UNKNOWN = "unknown"
STATUSES = (STATUS_RECEIVED, "sent_via_ai", "sent_by_human")
# What each Status value means to the people reading the workbook (the email says it in one line).
STATUS_MEANINGS = {
    STATUS_RECEIVED: "sent to you by the customer",
    "sent_via_ai": "your answer, written by the AI assistant",
    "sent_by_human": "your answer, written by a person",
    STATUS_UNKNOWN: "a message whose direction the platform did not record",
}
# Spellings seen from different platform writers; anything else is "unknown".
_DIRECTIONS = {
    **dict.fromkeys(("incoming", "inbound", "in", "received"), "incoming"),
    **dict.fromkeys(("outgoing", "outbound", "out", "sent"), "outgoing"),
}
Row = tuple[object, object, object, "datetime | None", str, str]
EPOCH_MILLISECONDS_ABOVE = 10**11  # epoch numbers above this are milliseconds (10^11 s is the year 5138)


def status_of(direction: object, is_ai_generated: object) -> str:
    """incoming: received; outgoing: sent_via_ai if is_ai_generated is true, else sent_by_human; else unknown."""
    if direction != "incoming" and direction != "outgoing":  # the exact spellings skip the normalising
        direction = _DIRECTIONS.get(direction.strip().lower()) if isinstance(direction, str) else None
    if direction == "incoming":
        return STATUS_RECEIVED
    if direction == "outgoing":
        return "sent_via_ai" if is_ai_generated is True else "sent_by_human"
    return STATUS_UNKNOWN


class RowStats:  # per-status counts and data-quality anomalies of one export
    def __init__(self) -> None:
        self.by_status, self.anomalies = Counter[str](), Counter[str]()

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def counts(self) -> tuple[dict[str, int], dict[str, int]]:  # every known status present
        return {status: 0 for status in STATUSES} | dict(self.by_status), dict(self.anomalies)


def parse_timestamp(value: object) -> datetime | None:
    """A `timestamp` that is not a BSON date: ISO 8601 text (naive is UTC) or epoch seconds/milliseconds; else None."""
    try:
        if isinstance(value, str):
            text = value.strip()
            moment = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return datetime.fromtimestamp(value / 1000 if abs(value) > EPOCH_MILLISECONDS_ABOVE else value, UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return None


def message_rows(
    messages: Iterable[dict[str, Any]], chats: Mapping[object, Chat], workspace_id: str, stats: RowStats
) -> Iterator[Row]:
    """Rows for messages of `chats` (keyed by every id form a message may use); a message of another chat is counted."""
    by_status, anomalies = stats.by_status, stats.anomalies
    for message in messages:
        chat_id = message.get("chat_id")
        chat = chats.get(chat_id)
        if chat is None:
            anomalies["orphaned_message"] += 1
            continue
        if isinstance(chat_id, str):
            anomalies["string_chat_id"] += 1
        workspace_phone, customer_phone = chat.phone_number, chat.customer_phone
        if not workspace_phone or not customer_phone:
            anomalies["missing_phone"] += 1
        status = status_of(message.get("direction"), message.get("is_ai_generated"))
        if status == STATUS_RECEIVED:
            sender, receiver = customer_phone, workspace_phone
        elif status == STATUS_UNKNOWN:
            sender, receiver = None, None  # who sent it is unknown: the row is kept, no direction guessed
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


def rows_by_timestamp(
    store: Store, workspace: Workspace, start: datetime, end: datetime, stats: RowStats
) -> Iterator[Row]:
    """The rows of messages with start <= timestamp < end (a manual export's window), in (timestamp, _id) order."""
    found = ownership.chats_of_workspace(store.chats, workspace)
    messages = arrivals.messages_by_timestamp(store.messages, found.message_chat_ids(), start, end)
    return message_rows(messages, ownership.by_both_forms(found.owned), workspace.id, stats)


def rows_by_arrival(
    store: Store, key: ArrivalKey, workspace: Workspace, low: Key, high: Key, stats: RowStats
) -> Iterator[Row]:
    """The rows of messages with low <= arrival key < high (a scheduled window or part), as the delivery read them."""
    found = ownership.chats_of_workspace(store.chats, workspace)
    messages = arrivals.window_messages(store.messages, key, sorted(found.owned), low, high)
    return message_rows(messages, ownership.by_both_forms(found.owned), workspace.id, stats)
