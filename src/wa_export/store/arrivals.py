"""Arrival order (EXPORT_ARRIVAL_FIELD: `_id`, or a BSON date written at insert) and the reads of `messages` and
`chats`, each bounded by a key range, chat ids or a time range: a run's cost follows what arrived (docs/design.md)."""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard, cast

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING

from wa_export.clock import as_utc, to_millis
from wa_export.errors import ConfigError
from wa_export.store import connection
from wa_export.store.connection import CHAT_PROJECTION, MESSAGE_PROJECTION, Document, Documents, both_forms, field_at

Key = ObjectId | datetime
# The pass reads two small fields per message: big batches keep getMores rare.
PASS_BATCH_SIZE = 20_000


@dataclass(frozen=True)
class ArrivalKey:  # the configured arrival field and how times map onto it
    field: str = "_id"

    @property
    def uses_object_id(self) -> bool:
        return self.field == "_id"

    @property
    def type_name(self) -> str:
        return "an ObjectId" if self.uses_object_id else "a BSON date"

    def at(self, moment: datetime) -> Key:
        """The smallest key of anything that arrived at `moment` or later."""
        return ObjectId.from_datetime(moment) if self.uses_object_id else to_millis(as_utc(moment))

    def usable(self, value: object) -> bool:
        return isinstance(value, ObjectId if self.uses_object_id else datetime)

    def position(self, workspace_id: str, cursor: object) -> Key:
        """A stored cursor as a key of this field; another kind is refused: its time would skip or repeat messages."""
        if is_key(cursor) and self.usable(cursor):
            return cursor
        if isinstance(cursor, ObjectId):
            found = f"an ObjectId ({cursor}), written while EXPORT_ARRIVAL_FIELD was _id"
        elif isinstance(cursor, datetime):
            found = f"a date ({as_utc(cursor).isoformat()}), written while EXPORT_ARRIVAL_FIELD was a date field"
        else:
            found = f"a {type(cursor).__name__} ({cursor!r}), no arrival key"
        raise ForeignCursor(
            f"Workspace {workspace_id}'s cursor is {found}, but EXPORT_ARRIVAL_FIELD is now {self.field!r}, which holds {self.type_name}: set EXPORT_ARRIVAL_FIELD back, or place the cursor in the new field with `wa-export state {workspace_id} --move-to TIME` (TIME: the arrival time from which messages are not yet delivered)."
        )

    def of(self, document: Document) -> object:
        return field_at(document, self.field)

    def pairs(self, found: Iterable[Document]) -> Iterator[tuple[Key, object, Document]]:
        """(key, raw chat_id, document) of what a range query on this field matched: all keys (one type)."""
        return ((cast(Key, self.of(document)), document.get("chat_id"), document) for document in found)

    def projection(self) -> dict[str, int]:
        return {"chat_id": 1} if self.uses_object_id else {self.field: 1, "chat_id": 1, "_id": 0}


class ForeignCursor(ConfigError):
    """A workspace's cursor was written under another kind of EXPORT_ARRIVAL_FIELD (an ObjectId vs a date)."""


def is_key(value: object) -> TypeGuard[Key]:
    return isinstance(value, (ObjectId, datetime))


def time_of(key: object) -> datetime | None:
    """When a key says its message arrived (an ObjectId's whole second, or the date); None for no key."""
    return key_order(key)[0] if is_key(key) else None


def key_order(key: Key) -> tuple[datetime, bytes]:
    """A total order across both key kinds: by arrival time, then (ObjectIds of one second) by their bytes."""
    return (key.generation_time, key.binary) if isinstance(key, ObjectId) else (as_utc(key), b"")


def key_text(key: object) -> str | None:
    """A key as text for people and JSON: 24 hex digits or an ISO 8601 time."""
    return as_utc(key).isoformat() if isinstance(key, datetime) else None if key is None else str(key)


def object_id_at(moment: datetime) -> ObjectId:
    """A fresh ObjectId whose embedded time is `moment` (seeding data that arrived then)."""
    return ObjectId(int(moment.timestamp()).to_bytes(4, "big") + os.urandom(8))


def arrivals_between(
    messages: Documents, key: ArrivalKey, start: Key, end: Key, *, documents: bool = False
) -> Iterator[tuple[Key, object, Document]]:
    """Every message with start <= key < end in key order; with `documents` also what a workbook row needs."""
    projection = {**MESSAGE_PROJECTION, key.field: 1} if documents else key.projection()
    query = {key.field: {"$gte": start, "$lt": end}}
    return key.pairs(messages.find(query, projection, batch_size=PASS_BATCH_SIZE).sort(key.field, ASCENDING))


def chats_by_id(chats: Documents, chat_ids: Sequence[ObjectId]) -> Iterator[Document]:
    """The chat documents with these ids (workspace and phones only), `$in` in chunks; ownership.owner_of judges them."""
    projection = {**CHAT_PROJECTION, "workspace_id": 1}
    for chunk in in_chunks(chat_ids):
        yield from chats.find({"_id": {"$in": chunk}}, projection, batch_size=len(chunk) + 1)


def in_chunks(ids: Sequence[Any]) -> Iterator[list[Any]]:
    """`$in` lists of CHAT_IDS_PER_QUERY ids: no huge command."""
    size = connection.CHAT_IDS_PER_QUERY
    for offset in range(0, len(ids), size):
        yield list(ids[offset : offset + size])


def _chats_between(key: ArrivalKey, chat_ids: Sequence[ObjectId], start: Key, end: Key) -> list[Document]:
    """One query per chunk of these chats (both id forms) for start <= key < end, on `{chat_id: 1, <key>: 1}`."""
    between = {"$gte": start, "$lt": end}
    return [{"chat_id": {"$in": both_forms(chunk)}, key.field: between} for chunk in in_chunks(chat_ids)]


def keys_of_chats(
    messages: Documents, key: ArrivalKey, chat_ids: Sequence[ObjectId], start: Key, end: Key
) -> Iterator[tuple[Key, object]]:
    """(arrival key, raw chat_id) of these chats' messages with start <= key < end, in key order."""
    queries = _chats_between(key, chat_ids, start, end)
    found = [messages.find(q, key.projection(), batch_size=PASS_BATCH_SIZE).sort(key.field, ASCENDING) for q in queries]
    merged = heapq.merge(*map(key.pairs, found), key=lambda found: found[0])  # keys of one field are of one type
    return ((arrival, chat_id) for arrival, chat_id, _ in merged)


def count_of_chats(messages: Documents, key: ArrivalKey, chat_ids: Sequence[ObjectId], start: Key, end: Key) -> int:
    return sum(messages.count_documents(query) for query in _chats_between(key, chat_ids, start, end))


def in_row_order(documents: Iterable[Document]) -> list[Document]:
    """Messages in a workbook's row order, (timestamp, _id), as MongoDB sorts them."""
    return sorted(documents, key=_row_order)


# MongoDB's sort order of BSON types after null (1); bool before int: a bool is an int; 10 for any other type.
_BSON_TYPE_RANKS = {bool: 8, int: 2, float: 2, str: 3, dict: 4, list: 5, bytes: 6, ObjectId: 7, datetime: 9}


def _row_order(document: Document) -> list[tuple[int, object]]:
    """(timestamp, _id) as MongoDB sorts mixed types: type, then value (documents, arrays and others by type only)."""
    order = []
    for value in (document.get("timestamp"), document.get("_id")):
        rank = 1 if value is None else next((r for kind, r in _BSON_TYPE_RANKS.items() if isinstance(value, kind)), 10)
        order.append((rank, value.binary if isinstance(value, ObjectId) else value if rank in (2, 3, 6, 8, 9) else 0))
    return order


def _rows(messages: Documents, queries: Iterable[Document], **options: Any) -> Iterator[Document]:
    options["batch_size"] = connection.MESSAGE_BATCH_SIZE  # read per call: a test shrinks it
    order = [("timestamp", ASCENDING), ("_id", ASCENDING)]
    cursors = (messages.find(query, MESSAGE_PROJECTION, **options).sort(order) for query in queries)
    return heapq.merge(*cursors, key=_row_order)


def window_messages(
    messages: Documents, key: ArrivalKey, chat_ids: Sequence[ObjectId], start: Key, end: Key
) -> Iterator[Document]:
    """These chats' messages with start <= key < end in row order; a big window's sort may need the disk."""
    return _rows(messages, _chats_between(key, chat_ids, start, end), allow_disk_use=True)


def messages_by_timestamp(
    messages: Documents, chat_ids: Sequence[object], start: datetime, end: datetime
) -> Iterator[Document]:
    """A manual window: these chats' messages with start <= timestamp < end, in (timestamp, _id) order."""
    between = {"$gte": start, "$lt": end}
    return _rows(messages, [{"chat_id": {"$in": chunk}, "timestamp": between} for chunk in in_chunks(chat_ids)])


NEWEST_PROBED = 10  # the newest messages (by `_id`) a scheduled run looks at before it moves any cursor


@dataclass(frozen=True)
class ArrivalKeyCheck:  # what the bounded probes of the arrival key found: one sentence each, or None
    unusable: str | None = None  # none of the newest messages has a usable key: a run sees nothing, moves no cursor
    partial: str | None = None  # some messages cannot be placed (missing or wrong-typed key): never exported

    @property
    def problem(self) -> str | None:
        return self.unusable or self.partial


def check_arrival_key(messages: Documents, key: ArrivalKey, *, ends: bool = True) -> ArrivalKeyCheck:
    """From a few index entries, never a scan: the newest messages, and with `ends` both ends of the key's index,
    where MongoDB sorts a missing or wrong-typed key (for `_id` the newest messages are the upper end)."""
    newest = list(messages.find({}, {key.field: 1}).sort("_id", DESCENDING).limit(NEWEST_PROBED))
    if not newest:
        return ArrivalKeyCheck()  # no message: nothing to miss
    if not any(key.usable(key.of(document)) for document in newest):
        value = key.of(newest[0])
        held = "that field" if value is None else f"a {type(value).__name__} there, not {key.type_name}"
        missing = "none of the newest messages has" if value is None else "the newest messages hold"
        instead = "a date field" if key.uses_object_id else "_id or to a date field"
        return ArrivalKeyCheck(
            unusable=f"EXPORT_ARRIVAL_FIELD is {key.field!r}, but {missing} {held} (e.g. message _id {newest[0].get('_id')!r}), so scheduled runs would pass over every message: they move no cursor and send nothing until you set EXPORT_ARRIVAL_FIELD to {instead} the platform writes on every message at insert."
        )
    directions = ([ASCENDING] if key.uses_object_id else [ASCENDING, DESCENDING]) if ends else []
    # Lazy: an index end is read only once everything before it was usable.
    index_ends = (messages.find_one({}, {key.field: 1}, sort=[(key.field, way)]) for way in directions)
    for document in itertools.chain(newest, index_ends):
        if document is None:
            break
        if not key.usable(value := key.of(document)):
            found = "no value" if value is None else f"a {type(value).__name__} value"
            example = f"e.g. message _id {document.get('_id')!r}" if not key.uses_object_id else repr(value)
            return ArrivalKeyCheck(
                partial=f"Some messages have {found} in {key.field} ({example}) where the arrival order needs {key.type_name}: scheduled runs cannot place them and never export them; set EXPORT_ARRIVAL_FIELD to a field every message gets at insert, or fix the platform writer."
            )
    return ArrivalKeyCheck()
