"""The one rule for which workspace a chat belongs to (docs/design.md, "Who owns a chat"): the one its `workspace_id`
names (ObjectId or string), else nobody; a message is the chat's its `chat_id` names. And a workspace's waiting messages."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING

from wa_export.store.arrivals import Key, in_chunks, is_key, key_order, time_of
from wa_export.store.connection import CHAT_PROJECTION, Chat, Document, Documents, Store, Workspace, field_at
from wa_export.store.connection import as_object_id as as_object_id  # also ownership's: the id rule
from wa_export.store.connection import both_forms as both_forms

chat_of_message = as_object_id  # the chat a message's `chat_id` names (either form), or None: nobody's


def owner_of(chat: Mapping[str, Any]) -> str | None:
    """The one workspace id (24 hex) a chat document belongs to, or None: it names no single workspace."""
    owner = as_object_id(chat.get("workspace_id"))
    return None if owner is None else str(owner)


def chat_of(document: Mapping[str, Any]) -> Chat:
    return Chat(document.get("phone_number"), document.get("customer_phone"))


def by_both_forms(chats: Mapping[ObjectId, Chat]) -> dict[object, Chat]:
    """The chats keyed by both id forms, as a message's `chat_id` may hold either."""
    return {form: chat for chat_id, chat in chats.items() for form in (chat_id, str(chat_id))}


@dataclass
class WorkspaceChats:  # a workspace's chats, and those naming it among others (they belong to nobody)
    owned: dict[ObjectId, Chat] = field(default_factory=dict)
    shared: list[ObjectId] = field(default_factory=list)

    def message_chat_ids(self) -> list[object]:
        """What a message of the workspace may hold in `chat_id`: each owned chat in both forms."""
        return both_forms(self.owned)


def chats_of_workspace(chats: Documents, workspace: Workspace) -> WorkspaceChats:
    found = WorkspaceChats()
    query = {"workspace_id": {"$in": [workspace.object_id, workspace.id]}}
    for document in chats.find(query, {**CHAT_PROJECTION, "workspace_id": 1}):
        chat_id = document.get("_id")
        if not isinstance(chat_id, ObjectId):
            continue  # no message can name it: the pass counts such messages as orphans
        if owner_of(document) == workspace.id:
            found.owned[chat_id] = chat_of(document)
        else:
            found.shared.append(chat_id)
    return found


@dataclass(frozen=True)
class Waiting:  # messages of one workspace whose arrival key is >= `counted_from` (its cursor)
    count: int
    capped: bool  # the count stopped at the cap: at least `count` wait
    oldest_at: datetime | None  # arrival time of the oldest waiting message
    counted_from: datetime


def count_waiting(store: Store, workspace: Workspace, from_key: Key, cap: int | None) -> Waiting:
    """Messages of the workspace's chats with arrival key >= from_key, and the oldest one's arrival time."""
    field = store.settings.export_arrival_field
    total, capped, oldest = 0, False, None
    for chunk in in_chunks(chats_of_workspace(store.chats, workspace).message_chat_ids()):
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
