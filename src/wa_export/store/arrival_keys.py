"""Arrival keys as `state` shows and moves them; the mapping itself is store/arrivals.py's ArrivalKey.

The key is the message field EXPORT_ARRIVAL_FIELD: `_id` (an ObjectId, whose
first four bytes are the writer's clock at insert, in whole seconds) or a BSON
date written at insert. A time maps to the smallest key of that second (for
`_id`) or to itself, so "every key >= key(T)" means "everything that arrived
from T on".
"""

from __future__ import annotations

from datetime import datetime
from typing import TypeGuard

from bson import ObjectId

from wa_export.clock import as_utc
from wa_export.store.arrivals import ArrivalKey as Arrivals

ArrivalKey = ObjectId | datetime


def key_for_time(arrival_field: str, moment: datetime) -> ArrivalKey:
    """The smallest key a message arriving at `moment` can have."""
    return Arrivals(arrival_field).at(as_utc(moment))


def time_of_key(key: object) -> datetime | None:
    """When a key says its message arrived (an ObjectId's generation time, or the date); None for anything else."""
    return Arrivals().time_of(key)


def is_arrival_key(key: object) -> TypeGuard[ArrivalKey]:
    return isinstance(key, (ObjectId, datetime))


def key_text(key: object) -> str | None:
    """A key as text for people and JSON: 24 hex digits or an ISO 8601 time."""
    if isinstance(key, ObjectId):
        return str(key)
    if isinstance(key, datetime):
        return as_utc(key).isoformat()
    return None if key is None else str(key)


def arrival_order(key: ArrivalKey) -> tuple[datetime, bytes]:
    """A sort key across both key types: by time, then (ObjectIds of one second) by their bytes."""
    if isinstance(key, ObjectId):
        return key.generation_time, key.binary
    return as_utc(key), b""
