"""Every read and write of `export_state`, in database time; a lease owner's writes hold only while it owns the lease,
so a stalled run never moves another run's cursor (docs/design.md, "The first cursor" and "Leases")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from wa_export.clock import DatabaseClock, as_utc, as_utc_or_none
from wa_export.settings import Settings
from wa_export.store.arrivals import ArrivalKey, Key, is_key, key_order
from wa_export.store.connection import Document, Documents, Store, read_fields
from wa_export.workspace_settings import ServedSlot

DUPLICATE_KEY = 11000
# "now" is known to within a round trip and an ObjectId's second; a later run may have moved a cursor to its end.
CLOCK_TOLERANCE = timedelta(seconds=2)
# An earlier version may have delivered messages up to EXPORT_LAG_SECONDS (plus noise) past its watermark.
LEGACY_DUPLICATE_MARGIN = timedelta(minutes=1)
KEEP_IN_FLIGHT = object()  # Lease.failed: leave the stored in_flight as it is
ANY_CURSOR = object()  # set_moved_cursor: whatever the cursor is now


@dataclass(frozen=True)
class InFlight:
    """An email handed (or about to be handed) to SMTP whose outcome is not recorded yet."""

    log_id: ObjectId | None
    run_id: str | None
    from_key: Key | None  # None: unreadable, the range is unknown
    to_key: Key | None
    part: int | None
    parts: int | None
    started_at: datetime | None
    note: str | None = None

    @classmethod
    def from_document(cls, value: object) -> InFlight | None:
        return cls(**read_fields(cls, value)) if isinstance(value, dict) else None

    def overlaps(self, low: Key, high: Key) -> bool:
        """Whether [low, high) shares a key with [from_key, to_key); unknown bounds overlap everything."""
        if self.from_key is None or self.to_key is None:
            return True
        return key_order(low) < key_order(self.to_key) and key_order(self.from_key) < key_order(high)

    def reach(self, high: Key) -> Key:
        """`high`, or the end of this range where it goes further."""
        return self.to_key if self.to_key is not None and key_order(self.to_key) > key_order(high) else high

    def after(self, key: Key) -> InFlight | None:
        """What is left of the range from `key` on (all of it when unreadable), or None once it is passed."""
        if self.to_key is not None and key_order(self.to_key) <= key_order(key):
            return None
        if self.to_key is None or self.from_key is None:
            return self
        return replace(self, log_id=None, from_key=max(self.from_key, key, key=key_order))


def _as_document(in_flight: InFlight | None) -> Document | None:
    return None if in_flight is None else {k: v for k, v in vars(in_flight).items() if k != "note" or v is not None}


@dataclass(frozen=True)
class WorkspaceState:  # one export_state document as a scheduled run reads it (or its absence)
    workspace_id: str
    exists: bool = False
    cursor: object = None  # as stored: a key, None (no cursor yet) or anything else (ArrivalKey.position refuses it)
    watermark: datetime | None = None
    in_flight: InFlight | None = None
    consecutive_failures: int = 0
    pending_files: tuple[str, ...] = ()
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    # The latest schedule slot served, and the schedule (with its zone) that served it (wa_export.workspace_settings).
    served_slot: datetime | None = None
    served_schedule: str | None = None

    @classmethod
    def from_document(cls, workspace_id: str, document: Mapping[str, Any]) -> WorkspaceState:
        cursor = document.get("cursor")
        cursor = as_utc(cursor) if isinstance(cursor, datetime) else cursor
        owner = document.get("lease_owner")  # named as stored, whatever its type: it still holds the lease
        fixed = {"workspace_id": workspace_id, "exists": True, "cursor": cursor}
        fixed["lease_owner"] = None if owner is None else str(owner)
        return cls(**read_fields(cls, document, in_flight=InFlight.from_document(document.get("in_flight")), **fixed))

    @property
    def served(self) -> ServedSlot | None:
        slot, schedule = self.served_slot, self.served_schedule
        return None if slot is None or schedule is None else ServedSlot(schedule, slot)

    @property
    def cursor_key(self) -> Key | None:
        return self.cursor if is_key(self.cursor) else None

    @property
    def pending(self) -> bool:
        """A failed delivery or an unknown outcome waits: the next run must look at this workspace."""
        return self.consecutive_failures > 0 or self.in_flight is not None

    def lease_held(self, now: datetime) -> bool:
        """As the lease's conditional write judges it (`lease_is_free`): an expiry still ahead, whoever is named."""
        return self.lease_expires_at is not None and self.lease_expires_at > now

    def leased_by_other(self, now: datetime, owner: str) -> bool:
        """Another run holds a live lease (a dry run, which takes none, reports it as the real run would)."""
        return self.lease_held(now) and self.lease_owner != owner


def read_states(store: Store, workspace_ids: Sequence[str] | None = None) -> dict[str, WorkspaceState]:
    query: Document = {} if workspace_ids is None else {"_id": {"$in": list(workspace_ids)}}
    projection = dict.fromkeys((f.name for f in fields(WorkspaceState) if f.name not in ("workspace_id", "exists")), 1)
    found = store.export_state.find(query, projection, batch_size=50_000)
    return {str(document["_id"]): WorkspaceState.from_document(str(document["_id"]), document) for document in found}


def read_state_documents(store: Store, workspace_ids: Sequence[str], *, single: bool = False) -> dict[str, Document]:
    """The whole documents of these workspaces, in one query (all documents, as a run reads them, unless `single`)."""
    query = {"_id": workspace_ids[0]} if single else {}
    wanted = set(workspace_ids)
    return {document["_id"]: document for document in store.export_state.find(query) if document["_id"] in wanted}


def last_successes(store: Store, workspace_ids: Sequence[str], earliest: datetime) -> dict[str, datetime]:
    query = {"_id": {"$in": list(workspace_ids)}, "last_success_at": {"$gte": earliest}}
    found = store.export_state.find(query, {"last_success_at": 1})
    return {str(d["_id"]): moment for d in found if (moment := as_utc_or_none(d.get("last_success_at"))) is not None}


def count_foreign_cursors(store: Store, key: ArrivalKey) -> int:
    """How many cursors are of the other key kind than `key` (written under another EXPORT_ARRIVAL_FIELD)."""
    return store.export_state.count_documents({"cursor": {"$type": "date" if key.uses_object_id else "objectId"}})


def count_cursors_ahead(store: Store, key: ArrivalKey, now: datetime) -> int:
    return store.export_state.count_documents({"cursor": {"$gt": key.at(now + CLOCK_TOLERANCE)}})


def position_key(settings: Settings, document: Mapping[str, Any], now: datetime) -> Key | None:
    """Where undelivered messages start: the cursor (ForeignCursor if foreign), else v1's watermark, never past now."""
    cursor, key = document.get("cursor"), ArrivalKey(settings.export_arrival_field)
    if is_key(cursor):
        return key.position(str(document.get("_id")), cursor)
    watermark = as_utc_or_none(document.get("watermark"))
    return None if watermark is None else key.at(min(watermark, now))


@dataclass(frozen=True)
class FirstCursor:  # where a workspace without a cursor starts, and why
    key: Key
    source: str  # "legacy_watermark" | "original_service" | "first_interval"
    in_flight: InFlight | None = None  # a range that may already have been delivered (migration)
    starts_at: datetime | None = None  # the time `key` was taken from


def first_cursor(
    settings: Settings, end: datetime, now: datetime, watermark: datetime | None, original: datetime | None
) -> FirstCursor:
    """Where a workspace without a cursor starts (docs/design.md, "The first cursor"), for a run ending at `end`."""
    key, interval = ArrivalKey(settings.export_arrival_field), timedelta(minutes=settings.export_interval_minutes)
    if watermark is not None:
        # An earlier version's timestamp watermark; one ahead of `end` (a clock anomaly) starts one interval back.
        start = watermark if watermark <= end else end - interval
        lag = timedelta(seconds=settings.export_lag_seconds)
        until = end if watermark > end else start + lag + LEGACY_DUPLICATE_MARGIN
        note = "migrated from a timestamp watermark: its last run may have delivered some of these already"
        marker = InFlight(None, None, key.at(start), key.at(until), None, None, now, note)
        return FirstCursor(key.at(start), "legacy_watermark", marker, start)
    start = end - interval if original is None else min(original, end)
    return FirstCursor(key.at(start), "first_interval" if original is None else "original_service", None, start)


@dataclass(frozen=True)
class IdleAdvance:  # move one workspace's cursor to the run's end key: it has nothing in [cursor, end)
    workspace_id: str
    read_cursor: Key | None  # None: no cursor yet
    exists: bool
    new_source: str | None = None  # for a workspace getting its first cursor
    # The pass covered [read_cursor, end): the cursor may move on from anywhere in it, else only from the value read.
    covered: bool = True
    serves: ServedSlot | None = None  # the schedule slot this finding-nothing serves


def lease_is_free(now: datetime) -> Document:
    """Never taken, released or expired."""
    return {"$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}]}


def _moved(key: Key, source: str, now: datetime) -> Document:
    return {"cursor": key, "cursor_source": source, "cursor_set_at": now}


def _update(
    sets: Document, now: datetime, serves: ServedSlot | None = None, success: bool = False, more: Document | None = None
) -> Document:
    """`$set` of `sets`, with `success` the failures reset, with `serves` its slot: only growing ($max), so a run
    that read an older state never takes it back."""
    done: Document = {"last_success_at": now, "consecutive_failures": 0, "last_error": None} if success else {}
    more = dict(more or {})
    if serves is not None:
        done["served_schedule"] = serves.schedule
        more["$max"] = {"served_slot": serves.slot}
    return {"$set": {**sets, **done, "updated_at": now}, **more}


def advance_idle(store: Store, clock: DatabaseClock, end_key: Key, items: Sequence[IdleAdvance]) -> None:
    """One bulk write: a cursor moves only from within what the run read, never over a live lease or an in_flight."""
    now = clock.now()
    operations: list[UpdateOne] = []
    for item in items:
        source = item.new_source or "first_interval"
        if not item.exists:
            created = {**_moved(end_key, source, now), "last_success_at": now, "updated_at": now, "created_at": now}
            created |= {"consecutive_failures": 0, "in_flight": None, "pending_files": []}
            if item.serves is not None:
                created |= {"served_schedule": item.serves.schedule, "served_slot": item.serves.slot}
            operations.append(UpdateOne({"_id": item.workspace_id}, {"$setOnInsert": created}, upsert=True))
            continue
        where: Document = {"cursor": {"$exists": False}}
        if item.read_cursor is not None:
            position = {"$gte": item.read_cursor, "$lt": end_key} if item.covered else item.read_cursor
            where, source = {"cursor": position, "in_flight": None}, "export"
        update = _update({**_moved(end_key, source, now), "last_success_at": now}, now, serves=item.serves)
        operations.append(UpdateOne({"_id": item.workspace_id, **where, **lease_is_free(now)}, update))
    if not operations:
        return
    try:
        store.export_state.bulk_write(operations, ordered=False)
    except BulkWriteError as error:
        # Two runs creating the same new document: the other one's is as good as ours.
        errors = error.details.get("writeErrors", [])
        if error.details.get("writeConcernErrors") or any(item.get("code") != DUPLICATE_KEY for item in errors):
            raise


def set_moved_cursor(
    store: Store, workspace_id: str, now: datetime, new_key: Key, *, expected_cursor: object = ANY_CURSOR
) -> Document | None:
    """The document before; DuplicateKeyError if leased or no longer `expected_cursor`. in_flight stays flagged."""
    query: Document = {"_id": workspace_id, **lease_is_free(now)}
    if expected_cursor is not ANY_CURSOR:
        query["cursor"] = expected_cursor  # None also matches a document without one
    update = _update(_moved(new_key, "moved", now), now, more={"$setOnInsert": {"created_at": now}})
    return store.export_state.find_one_and_update(query, update, upsert=True, return_document=ReturnDocument.BEFORE)


class LeaseLost(Exception):
    """Another run took over this workspace (our lease expired); stop before sending or writing."""


@dataclass
class Lease:
    collection: Documents
    workspace_id: str
    owner: str
    duration: timedelta
    clock: DatabaseClock
    expires_at: datetime
    state: WorkspaceState
    cursor: object  # as stored (WorkspaceState.cursor), then as this lease moved it
    new_cursor_source: str | None = None  # set when this lease created the cursor
    serves: ServedSlot | None = None  # the schedule slot recorded once the delivery has ended well

    def _write(self, what: str | None, update: Document, *, release: bool = False, **where: Any) -> None:
        """One write conditional on still owning the lease (and `where`); LeaseLost before `what` if it is not."""
        if release:
            update["$set"].update(lease_owner=None, lease_expires_at=None)
        result = self.collection.update_one({"_id": self.workspace_id, "lease_owner": self.owner, **where}, update)
        if result.matched_count != 1 and what is not None:
            raise LeaseLost(
                f"the lease on workspace {self.workspace_id} expired and was taken by another run before {what}"
            )

    def renew(self) -> None:
        expires_at = self.clock.now() + self.duration
        self._write("it could be renewed", {"$set": {"lease_expires_at": expires_at}})
        self.expires_at = expires_at

    def set_in_flight(self, in_flight: InFlight, pending_files: Sequence[str]) -> None:
        now = self.clock.now()
        intent = {"in_flight": _as_document(in_flight), "pending_files": list(pending_files), "last_attempt_at": now}
        self._write("the email was sent (nothing was sent)", _update(intent, now))

    def delivered(
        self, to_key: Key, file: str | None, *, possible_duplicate: bool, in_flight: InFlight | None, release: bool
    ) -> None:
        """The email was accepted: the cursor moves past it; `in_flight`: an earlier intent reaching further, if any."""
        now = self.clock.now()
        changes = {**_moved(to_key, "export", now), "in_flight": _as_document(in_flight)}
        if possible_duplicate:
            changes["last_possible_duplicate_at"] = now
        pull = {"$pull": {"pending_files": file}} if file is not None else {}
        update = _update(changes, now, serves=self.serves if release else None, success=True, more=pull)
        self._write("the cursor could move", update, release=release, cursor=self.cursor)
        self.cursor = to_key

    def caught_up(self, end_key: Key, *, release: bool, force: bool = False) -> None:
        """Nothing (left) up to `end_key`: the cursor moves there (back only with `force`), a stale intent closes."""
        now = self.clock.now()
        # The cursor is of the run's key kind: the window refused any other (ArrivalKey.position).
        moves = force or not is_key(self.cursor) or key_order(self.cursor) < key_order(end_key)
        changes = {"in_flight": None, **(_moved(end_key, "export", now) if moves else {})}
        update = _update(changes, now, serves=self.serves, success=True)
        self._write("the cursor could move", update, release=release, cursor=self.cursor)
        if moves:
            self.cursor = end_key

    def failed(self, error: str, *, in_flight: object = KEEP_IN_FLIGHT, pending_files: Sequence[str] | None) -> None:
        """The cursor stays, the failure is counted, the lease released; `in_flight` may have been delivered anyway."""
        now = self.clock.now()
        changes: Document = {"last_error": error, "last_attempt_at": now}
        if in_flight is None or isinstance(in_flight, InFlight):
            changes["in_flight"] = _as_document(in_flight)
        if pending_files is not None:
            changes["pending_files"] = list(pending_files)
        update = _update(changes, now, more={"$inc": {"consecutive_failures": 1}})
        self._write("the failure could be recorded", update, release=True)

    def release(self) -> None:
        # Conditional: never release a lease that expired and now belongs to another run.
        self._write(None, _update({}, self.clock.now()), release=True)

    def count_escaped_failure(self, error: str) -> None:
        """A failure that escaped the delivery's own records, after the lease was released."""
        changes = {"last_error": error, "last_attempt_at": self.clock.now()}
        self.collection.update_one({"_id": self.workspace_id}, {"$inc": {"consecutive_failures": 1}, "$set": changes})


def acquire_lease(
    store: Store, workspace_id: str, owner: str, duration: timedelta, clock: DatabaseClock, first: FirstCursor | None
) -> Lease | None:
    """None if another run holds a live lease; `first` is pinned now, so a failing first delivery still pins it."""
    collection, now = store.export_state, clock.now()
    on_insert: Document = {"created_at": now, "consecutive_failures": 0, "pending_files": []}
    pin: Document = {}
    if first is not None:
        pin = _moved(first.key, first.source, now)
        on_insert.update(pin, in_flight=_as_document(first.in_flight))
    taken = {"lease_owner": owner, "lease_expires_at": now + duration, "lease_acquired_at": now}
    try:
        document = collection.find_one_and_update(
            {"_id": workspace_id, **lease_is_free(now)},
            _update(taken, now, more={"$setOnInsert": on_insert}),
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return None
    if document is None or document.get("lease_owner") != owner:
        return None
    state = WorkspaceState.from_document(workspace_id, document)
    lease = Lease(collection, workspace_id, owner, duration, clock, now + duration, state, state.cursor)
    if first is None:
        return lease
    if document.get("created_at") == now and state.cursor == first.key:
        lease.new_cursor_source = first.source
    if state.cursor_key is None:
        # An older document (e.g. one with only a timestamp watermark): pin the cursor now.
        changes = {**pin, "updated_at": now}
        if first.in_flight is not None:
            changes["in_flight"] = _as_document(first.in_flight)
        where = {"_id": workspace_id, "lease_owner": owner, "cursor": {"$exists": False}}
        if collection.update_one(where, {"$set": changes}).matched_count == 1:
            lease.state = WorkspaceState.from_document(workspace_id, {**document, **changes})
            lease.cursor, lease.new_cursor_source = first.key, first.source
    return lease
