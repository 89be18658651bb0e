"""Arrival order (EXPORT_ARRIVAL_FIELD: `_id`, or a BSON date written at insert) and the reads of `messages` and
`chats`, each bounded by a key range, chat ids or a time range: a run's cost follows what arrived (docs/design.md)."""

from __future__ import annotations

import heapq
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard, TypeVar, cast

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING

from wa_export.clock import as_utc, to_millis
from wa_export.errors import ConfigError
from wa_export.store import connection
from wa_export.store.connection import CHAT_PROJECTION, MESSAGE_PROJECTION, Document, Documents, both_forms, field_at

T = TypeVar("T")
Key = ObjectId | datetime
# The pass reads two small fields per message: big batches keep getMores rare.
PASS_BATCH_SIZE = 20_000


@dataclass(frozen=True)
class ArrivalKey:
    """The configured arrival field and how times map onto it."""

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
        """A stored cursor as a key of this field; one of the other kind is refused, never translated through its
        time (that would silently skip or repeat what arrived under the other field)."""
        if is_key(cursor) and self.usable(cursor):
            return cursor
        if isinstance(cursor, ObjectId):
            found = f"an ObjectId ({cursor}), written while EXPORT_ARRIVAL_FIELD was _id"
        elif isinstance(cursor, datetime):
            found = f"a date ({as_utc(cursor).isoformat()}), written while EXPORT_ARRIVAL_FIELD was a date field"
        else:
            found = f"a {type(cursor).__name__} ({cursor!r}), no arrival key"
        raise ForeignCursor(
            f"Workspace {workspace_id}'s cursor is {found}, but EXPORT_ARRIVAL_FIELD is now {self.field!r}, which holds "
            f"{self.type_name}: set EXPORT_ARRIVAL_FIELD back, or place the cursor in the new field with "
            f"`wa-export state {workspace_id} --move-to TIME` (TIME: the arrival time from which messages are not yet "
            "delivered)."
        )

    def of(self, document: Document) -> object:
        return field_at(document, self.field)

    def matched(self, document: Document) -> Key:
        """The key of a document that a range query on this field matched: MongoDB compares within one type."""
        return cast(Key, self.of(document))

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
    """(arrival key, raw chat_id, document) of every message with start <= key < end, in key order, on the key's
    index; with `documents` the document also holds what a workbook row needs (MESSAGE_PROJECTION)."""
    projection = {**MESSAGE_PROJECTION, key.field: 1} if documents else key.projection()
    query = {key.field: {"$gte": start, "$lt": end}}
    for document in messages.find(query, projection, batch_size=PASS_BATCH_SIZE).sort(key.field, ASCENDING):
        yield key.matched(document), document.get("chat_id"), document


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
    cursors = [((key.matched(document), document.get("chat_id")) for document in cursor) for cursor in found]
    return _merged(cursors, lambda pair: pair[0])  # keys of one field are of one type


def count_of_chats(messages: Documents, key: ArrivalKey, chat_ids: Sequence[ObjectId], start: Key, end: Key) -> int:
    return sum(messages.count_documents(query) for query in _chats_between(key, chat_ids, start, end))


def in_row_order(documents: Iterable[Document]) -> list[Document]:
    """Messages in a workbook's row order, (timestamp, _id), as MongoDB sorts them."""
    return sorted(documents, key=_timestamp_order)


# MongoDB's sort order of BSON types (bool before int: a bool is an int); 10 for any other type.
_BSON_TYPE_RANKS = ((type(None), 1), (bool, 8), ((int, float), 2), (str, 3), (dict, 4), (list, 5), (bytes, 6))


def bson_order(value: object) -> tuple[int, object]:
    """A sort key that orders values of mixed types the way MongoDB sorts them: type first, then value (documents,
    arrays and unknown types by type only)."""
    if isinstance(value, ObjectId):
        return (7, value.binary)
    if isinstance(value, datetime):
        return (9, value)
    rank = next((rank for kind, rank in _BSON_TYPE_RANKS if isinstance(value, kind)), 10)
    return (rank, value if rank in (2, 3, 6, 8) else 0)


def _timestamp_order(document: Document) -> tuple[tuple[int, object], tuple[int, object]]:
    return bson_order(document.get("timestamp")), bson_order(document.get("_id"))


def _merged(cursors: Sequence[Iterator[T]], order: Callable[[T], Any]) -> Iterator[T]:
    return iter(cursors[0]) if len(cursors) == 1 else heapq.merge(*cursors, key=order)


def _rows(messages: Documents, queries: Iterable[Document], *, allow_disk_use: bool = False) -> Iterator[Document]:
    """Each query's messages in (timestamp, _id) order, merged: a workbook's rows."""
    # MESSAGE_BATCH_SIZE is read per call: a test shrinks it.
    options: Document = {"batch_size": connection.MESSAGE_BATCH_SIZE}
    options |= {"allow_disk_use": True} if allow_disk_use else {}
    cursors = [
        iter(messages.find(query, MESSAGE_PROJECTION, **options).sort([("timestamp", ASCENDING), ("_id", ASCENDING)]))
        for query in queries
    ]
    return _merged(cursors, _timestamp_order)


def window_messages(
    messages: Documents, key: ArrivalKey, chat_ids: Sequence[ObjectId], start: Key, end: Key
) -> Iterator[Document]:
    """These chats' messages (both id forms) with start <= arrival key < end, in (timestamp, _id) order, on
    `{chat_id: 1, <key>: 1}`; the sort may need a blocking stage on a big window, hence allow_disk_use."""
    return _rows(messages, _chats_between(key, chat_ids, start, end), allow_disk_use=True)


def messages_by_timestamp(
    messages: Documents, chat_ids: Sequence[object], start: datetime, end: datetime
) -> Iterator[Document]:
    """A manual window: these chats' messages with start <= timestamp < end, in (timestamp, _id) order."""
    between = {"$gte": start, "$lt": end}
    return _rows(messages, [{"chat_id": {"$in": chunk}, "timestamp": between} for chunk in in_chunks(chat_ids)])


NEWEST_PROBED = 10  # the newest messages (by `_id`) a scheduled run looks at before it moves any cursor


@dataclass(frozen=True)
class ArrivalKeyCheck:
    """What the bounded probes of the arrival key found: one sentence each, or None."""

    unusable: str | None = None  # none of the newest messages has a usable key: a run sees nothing, moves no cursor
    partial: str | None = None  # some messages cannot be placed (missing or wrong-typed key): never exported

    @property
    def problem(self) -> str | None:
        return self.unusable or self.partial


def check_arrival_key(messages: Documents, key: ArrivalKey, *, ends: bool = True) -> ArrivalKeyCheck:
    """Whether the arrival key can see the messages, from a few index entries, never a scan: the newest
    NEWEST_PROBED by `_id`, and with `ends` both ends of the key's index, where MongoDB sorts a missing or
    wrong-typed key (for `_id` the newest messages are the upper end)."""
    newest = list(messages.find({}, {key.field: 1}).sort("_id", DESCENDING).limit(NEWEST_PROBED))
    if not newest:
        return ArrivalKeyCheck()  # no message: nothing to miss
    if not any(key.usable(key.of(document)) for document in newest):
        value = key.of(newest[0])
        held = "that field" if value is None else f"a {type(value).__name__} there, not {key.type_name}"
        missing = "none of the newest messages has" if value is None else "the newest messages hold"
        instead = "a date field" if key.uses_object_id else "_id or to a date field"
        return ArrivalKeyCheck(
            unusable=f"EXPORT_ARRIVAL_FIELD is {key.field!r}, but {missing} {held} (e.g. message _id "
            f"{newest[0].get('_id')!r}), so scheduled runs would pass over every message: they move no cursor and "
            f"send nothing until you set EXPORT_ARRIVAL_FIELD to {instead} the platform writes on every message at insert."
        )
    directions = ([ASCENDING] if key.uses_object_id else [ASCENDING, DESCENDING]) if ends else []
    # Lazy: an index end is read only once everything before it was usable.
    index_ends = (
        next(iter(messages.find({}, {key.field: 1}).sort(key.field, way).limit(1)), None) for way in directions
    )
    for document in itertools.chain(newest, index_ends):
        if document is None:
            break
        if not key.usable(value := key.of(document)):
            found = "no value" if value is None else f"a {type(value).__name__} value"
            example = f"e.g. message _id {document.get('_id')!r}" if not key.uses_object_id else repr(value)
            return ArrivalKeyCheck(
                partial=f"Some messages have {found} in {key.field} ({example}) where the arrival order needs "
                f"{key.type_name}: scheduled runs cannot place them and never export them; set EXPORT_ARRIVAL_FIELD "
                "to a field every message gets at insert, or fix the platform writer."
            )
    return ArrivalKeyCheck()
