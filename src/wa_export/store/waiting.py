"""How many messages of a workspace wait behind its position, and since when.

Used by `wa-export state` and by the metrics file. The cost for one workspace:
one query for its chats, then per 5,000 chats one count and (when some wait)
one query for the oldest, each on the `{chat_id: 1, <arrival key>: 1}` index.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from wa_export.clock import as_utc_or_none
from wa_export.settings import Settings
from wa_export.store.arrival_keys import (
    ArrivalKey,
    arrival_order,
    is_arrival_key,
    key_for_time,
    time_of_key,
)
from wa_export.store.arrivals import ArrivalKey as Arrivals
from wa_export.store.connection import CHAT_IDS_PER_QUERY, Store, Workspace
from wa_export.store.ownership import chats_of_workspace


@dataclass(frozen=True)
class Waiting:
    """Messages of one workspace whose arrival key is >= `counted_from` (its cursor)."""

    count: int
    capped: bool  # the count stopped at the cap: at least `count` wait
    oldest_at: datetime | None  # arrival time of the oldest waiting message
    counted_from: datetime


def position_key(settings: Settings, document: Mapping[str, Any], now: datetime) -> ArrivalKey | None:
    """Where a workspace's undelivered messages start: its cursor, or v1's watermark as the engine migrates it.

    A cursor written under another kind of EXPORT_ARRIVAL_FIELD raises ForeignCursor (store/arrivals.py).
    """
    cursor = document.get("cursor")
    if is_arrival_key(cursor):
        return Arrivals(settings.export_arrival_field).position(str(document.get("_id")), cursor)
    watermark = as_utc_or_none(document.get("watermark"))
    if watermark is not None:
        return key_for_time(settings.export_arrival_field, min(watermark, now))  # never past the clock
    return None


def workspace_chat_ids(store: Store, workspace: Workspace) -> list[object]:
    """What a message of the workspace holds in `chat_id`: its chats (ownership.py), each in both id forms.

    A chat that names no single workspace belongs to nobody: its messages are
    never delivered, so they are not waiting.
    """
    return chats_of_workspace(store.chats, workspace).message_chat_ids()


def count_waiting(store: Store, workspace: Workspace, from_key: ArrivalKey, cap: int | None) -> Waiting:
    """Messages of the workspace's chats with arrival key >= from_key, and the oldest one's arrival time."""
    field = store.settings.export_arrival_field
    counted_from = time_of_key(from_key)
    assert counted_from is not None
    chat_ids = workspace_chat_ids(store, workspace)
    total = 0
    oldest: ArrivalKey | None = None
    capped = False
    for offset in range(0, len(chat_ids), CHAT_IDS_PER_QUERY):
        query = {"chat_id": {"$in": chat_ids[offset : offset + CHAT_IDS_PER_QUERY]}, field: {"$gte": from_key}}
        if cap is None:
            found = store.messages.count_documents(query)
        else:
            remaining = cap - total
            found = store.messages.count_documents(query, limit=remaining)
            capped = capped or found >= remaining
        if found == 0:
            continue
        total += found
        first = next(iter(store.messages.find(query, {field: 1}).sort(field, ASCENDING).limit(1)), None)
        key = _field_value(first, field) if first is not None else None
        if is_arrival_key(key) and (oldest is None or arrival_order(key) < arrival_order(oldest)):
            oldest = key
        if capped:
            break
    return Waiting(total, capped, time_of_key(oldest), counted_from)


def _field_value(document: Mapping[str, Any], dotted: str) -> object:
    value: object = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
