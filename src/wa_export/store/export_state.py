"""The `export_state` collection: one document per workspace (docs/design.md); leases are store/leases.py.

One document per workspace, `_id` = the workspace id string:

    cursor            arrival key: every message with key >= cursor is not yet delivered
    cursor_source     "original_service" | "first_interval" | "legacy_watermark" | "moved" | "export"
    cursor_set_at     database time the cursor last changed
    lease_owner, lease_expires_at, lease_acquired_at
    in_flight         None, or {log_id, run_id, from_key, to_key, part, parts, started_at}: set
                      (under the lease) before an email is handed to SMTP, cleared when the
                      cursor moves past it; found set by a later run = a possible duplicate
    last_success_at, last_attempt_at, consecutive_failures, last_error
    pending_files     workbooks written but not yet delivered (the next attempt deletes them)
    last_possible_duplicate_at
    watermark         the timestamp watermark of earlier versions: read once to migrate, never written
    created_at, updated_at

Every time written here comes from the database clock (`DatabaseClock`), never
from this host's clock. Workspaces with nothing new are advanced here in one
bulk write, never over a live lease.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError

from wa_export.clock import DatabaseClock, as_utc, as_utc_or_none

CURSOR_SOURCES = ("original_service", "first_interval", "legacy_watermark", "moved", "export")
DUPLICATE_KEY = 11000
# A cursor is "ahead of the database clock" only beyond this: a run that started a
# moment after the one looking may already have moved it to its own window end, and
# "now" is known to within a round trip and an ObjectId's whole second.
CLOCK_TOLERANCE = timedelta(seconds=2)


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) in UTC (manual exports)."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.end <= self.start


@dataclass(frozen=True)
class InFlight:
    """An email handed (or about to be handed) to SMTP whose outcome is not recorded yet."""

    log_id: ObjectId | None
    run_id: str | None
    from_key: object
    to_key: object
    part: int | None
    parts: int | None
    started_at: datetime | None
    note: str | None = None

    def as_document(self) -> dict[str, Any]:
        document = {
            "log_id": self.log_id,
            "run_id": self.run_id,
            "from_key": self.from_key,
            "to_key": self.to_key,
            "part": self.part,
            "parts": self.parts,
            "started_at": self.started_at,
        }
        if self.note is not None:
            document["note"] = self.note
        return document

    @classmethod
    def from_document(cls, value: object) -> InFlight | None:
        if not isinstance(value, dict):
            return None
        log_id = value.get("log_id")
        part, parts = value.get("part"), value.get("parts")
        return cls(
            log_id=log_id if isinstance(log_id, ObjectId) else None,
            run_id=value.get("run_id") if isinstance(value.get("run_id"), str) else None,
            from_key=value.get("from_key"),
            to_key=value.get("to_key"),
            part=part if isinstance(part, int) else None,
            parts=parts if isinstance(parts, int) else None,
            started_at=as_utc_or_none(value.get("started_at")),
            note=value.get("note") if isinstance(value.get("note"), str) else None,
        )

    def overlaps(self, low: object, high: object) -> bool:
        """Whether [low, high) shares a key with [from_key, to_key); unknown bounds overlap everything."""
        try:
            return bool(low < self.to_key and self.from_key < high)  # type: ignore[operator]
        except TypeError:
            return True


@dataclass(frozen=True)
class WorkspaceState:
    """One export_state document as read (or its absence)."""

    workspace_id: str
    exists: bool = False
    cursor: object = None  # an ObjectId or a datetime; None: no cursor yet
    cursor_source: str | None = None
    watermark: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    in_flight: InFlight | None = None
    consecutive_failures: int = 0
    pending_files: tuple[str, ...] = ()

    @classmethod
    def from_document(cls, workspace_id: str, document: dict[str, Any] | None) -> WorkspaceState:
        if document is None:
            return cls(workspace_id)
        failures = document.get("consecutive_failures")
        pending = document.get("pending_files")
        cursor = document.get("cursor")
        return cls(
            workspace_id=workspace_id,
            exists=True,
            cursor=as_utc(cursor) if isinstance(cursor, datetime) else cursor,
            cursor_source=document.get("cursor_source") if isinstance(document.get("cursor_source"), str) else None,
            watermark=as_utc_or_none(document.get("watermark")),
            lease_owner=document.get("lease_owner") if isinstance(document.get("lease_owner"), str) else None,
            lease_expires_at=as_utc_or_none(document.get("lease_expires_at")),
            in_flight=InFlight.from_document(document.get("in_flight")),
            consecutive_failures=failures if isinstance(failures, int) and not isinstance(failures, bool) else 0,
            pending_files=tuple(path for path in pending if isinstance(path, str)) if isinstance(pending, list) else (),
        )

    @property
    def has_cursor(self) -> bool:
        return isinstance(self.cursor, (ObjectId, datetime))

    @property
    def pending(self) -> bool:
        """A failed delivery or an unknown outcome waits: the next run must look at this workspace."""
        return self.consecutive_failures > 0 or self.in_flight is not None

    def leased_by_other(self, now: datetime, owner: str) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_owner != owner
            and self.lease_expires_at is not None
            and self.lease_expires_at > now
        )


STATE_PROJECTION = {
    "cursor": 1,
    "cursor_source": 1,
    "watermark": 1,
    "lease_owner": 1,
    "lease_expires_at": 1,
    "in_flight": 1,
    "consecutive_failures": 1,
    "pending_files": 1,
}


def read_states(
    collection: Collection[dict[str, Any]], workspace_ids: Sequence[str] | None = None
) -> dict[str, WorkspaceState]:
    """Every export_state document in one read (or those of the named workspaces)."""
    query: dict[str, Any] = {} if workspace_ids is None else {"_id": {"$in": list(workspace_ids)}}
    return {
        str(document["_id"]): WorkspaceState.from_document(str(document["_id"]), document)
        for document in collection.find(query, STATE_PROJECTION, batch_size=50_000)
    }


def lease_is_free(now: datetime) -> dict[str, Any]:
    """The filter of a document whose lease nobody holds (never taken, released or expired at `now`)."""
    return {"$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}]}


@dataclass(frozen=True)
class FirstCursor:
    """Where a workspace without a cursor starts, and why."""

    key: object
    source: str
    in_flight: InFlight | None = None  # a range that may already have been delivered (migration)


# --------------------------------------------------------------------------- workspaces with nothing new


@dataclass(frozen=True)
class IdleAdvance:
    """Move one workspace's cursor to the run's end key: it has nothing in [cursor, end)."""

    workspace_id: str
    read_cursor: object  # None: no cursor yet
    exists: bool
    new_source: str | None = None  # for a workspace getting its first cursor
    # The pass covered [read_cursor, end): the cursor may move on from anywhere in that
    # range (another run may have moved it meanwhile). Else only from the value read.
    covered: bool = True


def advance_idle(
    collection: Collection[dict[str, Any]], clock: DatabaseClock, end_key: object, items: Sequence[IdleAdvance]
) -> None:
    """One bulk write for every workspace with nothing new: no per-workspace round trip.

    A cursor moves to `end_key` only if it is still within what the run looked at
    ([the cursor it read, end_key), or exactly the value read), never over a live
    lease, never over an intent (in_flight) of another run; a workspace without a
    document gets one with its cursor at the end key.
    """
    now = clock.now()
    moved = {"cursor": end_key, "cursor_set_at": now, "last_success_at": now, "updated_at": now}
    free = lease_is_free(now)
    operations: list[UpdateOne] = []
    for item in items:
        if not item.exists:
            operations.append(
                UpdateOne(
                    {"_id": item.workspace_id},
                    {"$setOnInsert": {**moved, "cursor_source": item.new_source or "first_interval",
                                      "created_at": now, "consecutive_failures": 0, "in_flight": None,
                                      "pending_files": []}},
                    upsert=True,
                )
            )
        elif item.read_cursor is None:
            operations.append(
                UpdateOne(
                    {"_id": item.workspace_id, "cursor": {"$exists": False}, **free},
                    {"$set": {**moved, "cursor_source": item.new_source or "first_interval"}},
                )
            )
        else:
            position: object = {"$gte": item.read_cursor, "$lt": end_key} if item.covered else item.read_cursor
            operations.append(
                UpdateOne(
                    {"_id": item.workspace_id, "cursor": position, "in_flight": None, **free},
                    {"$set": {**moved, "cursor_source": "export"}},
                )
            )
    if not operations:
        return
    try:
        collection.bulk_write(operations, ordered=False)
    except BulkWriteError as error:
        # Two runs creating the same new document: the other one's is as good as ours.
        if any(item.get("code") != DUPLICATE_KEY for item in error.details.get("writeErrors", [])):
            raise
        if error.details.get("writeConcernErrors"):
            raise


def count_cursors_ahead(collection: Collection[dict[str, Any]], key_at: Callable[[datetime], object],
                        now: datetime) -> int:
    """How many cursors are ahead of the database clock `now` (a clock anomaly; `health` reports it)."""
    return collection.count_documents({"cursor": {"$gt": key_at(now + CLOCK_TOLERANCE)}})


__all__ = [
    "CLOCK_TOLERANCE",
    "CURSOR_SOURCES",
    "FirstCursor",
    "IdleAdvance",
    "InFlight",
    "Window",
    "WorkspaceState",
    "advance_idle",
    "count_cursors_ahead",
    "read_states",
]
