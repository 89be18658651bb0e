"""How many messages of a workspace wait behind its position, and since when (`state` and the metrics file)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING

from wa_export.clock import as_utc_or_none
from wa_export.settings import Settings
from wa_export.store.arrivals import ArrivalKey, Key, in_chunks, is_key, key_order, time_of
from wa_export.store.connection import Document, Store, Workspace, field_at
from wa_export.store.ownership import chats_of_workspace


@dataclass(frozen=True)
class Waiting:
    """Messages of one workspace whose arrival key is >= `counted_from` (its cursor)."""

    count: int
    capped: bool  # the count stopped at the cap: at least `count` wait
    oldest_at: datetime | None  # arrival time of the oldest waiting message
    counted_from: datetime


def position_key(settings: Settings, document: Mapping[str, Any], now: datetime) -> Key | None:
    """Where a workspace's undelivered messages start: its cursor (ForeignCursor for one of the other key kind),
    or v1's watermark as the engine migrates it."""
    cursor = document.get("cursor")
    key = ArrivalKey(settings.export_arrival_field)
    if is_key(cursor):
        return key.position(str(document.get("_id")), cursor)
    watermark = as_utc_or_none(document.get("watermark"))
    return None if watermark is None else key.at(min(watermark, now))  # never past the clock


def workspace_chat_ids(store: Store, workspace: Workspace) -> list[object]:
    """What a message of the workspace holds in `chat_id`: its own chats (ownership.py), in both id forms."""
    return chats_of_workspace(store.chats, workspace).message_chat_ids()


def count_waiting(store: Store, workspace: Workspace, from_key: Key, cap: int | None) -> Waiting:
    """Messages of the workspace's chats with arrival key >= from_key, and the oldest one's arrival time."""
    field = store.settings.export_arrival_field
    total, capped, oldest = 0, False, None
    for chunk in in_chunks(workspace_chat_ids(store, workspace)):
        query = {"chat_id": {"$in": chunk}, field: {"$gte": from_key}}
        remaining: Document = {} if cap is None else {"limit": cap - total}
        found = store.messages.count_documents(query, **remaining)
        capped = cap is not None and found >= cap - total
        if found == 0:
            continue
        total += found
        first = next(iter(store.messages.find(query, {field: 1}).sort(field, ASCENDING).limit(1)), {})
        oldest = min(filter(is_key, (oldest, field_at(first, field))), key=key_order, default=None)
        if capped:
            break
    return Waiting(total, capped, time_of(oldest), key_order(from_key)[0])
