"""`wa-export state`: where each workspace's scheduled delivery stands, and moving a cursor.

Reads the `export_state` documents (one per workspace, `_id` = workspace id):
the cursor (every message whose arrival key is >= it is not delivered yet),
where it came from, the lease, failures, an in-flight delivery. "Now" is the
database server's clock, the one the leases are measured on.

Counting waiting messages costs one query for the workspace's chats and one
count (plus one query for the oldest, when some wait) per 5,000 chats. For one
named workspace the count is exact; over all workspaces each count stops at
WAITING_COUNT_CAP so that one huge backlog cannot make the command slow.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from bson import ObjectId
from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from wa_export.clock import SECOND_FORMAT, as_utc_or_none, format_local, iso, parse_time
from wa_export.errors import MongoUnavailable, UsageProblem, WorkspaceBusy
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store.arrival_keys import (
    ArrivalKey,
    comparable_key,
    is_arrival_key,
    key_for_time,
    key_text,
    time_of_key,
)
from wa_export.store.connection import (
    CHAT_IDS_PER_QUERY,
    SERVICE_NAME,
    Store,
    Workspace,
    describe_mongo_error,
    mongo_errors,
    open_store,
    parse_workspace_id,
)
from wa_export.units import count_or_zero

WAITING_COUNT_CAP = 10_000
CURSOR_MOVED_EVENT = "cursor_moved"
MOVED_SOURCE = "moved"
FirstCursorSource = Literal["original_service", "first_interval"]
MoveDirection = Literal["back", "forward", "unchanged", "created"]


@dataclass(frozen=True)
class Waiting:
    """Messages of one workspace whose arrival key is >= `counted_from` (its cursor)."""

    count: int
    capped: bool  # the count stopped at the cap: at least `count` wait
    oldest_at: datetime | None  # arrival time of the oldest waiting message
    counted_from: datetime


@dataclass(frozen=True)
class FirstCursor:
    """Where the next scheduled run starts a workspace that has no cursor yet."""

    source: FirstCursorSource
    starts_at: datetime | None  # None: one interval before that run's end, not known before it


@dataclass(frozen=True)
class WorkspaceState:
    workspace_id: str
    workspace_name: str
    workspace_status: str
    database_now: datetime
    cursor_key: ArrivalKey | None
    cursor_source: str | None
    cursor_set_at: datetime | None
    legacy_watermark: datetime | None  # v1's position; the next run turns it into a cursor
    first_cursor: FirstCursor | None
    waiting: Waiting | None  # None: not counted (no position to count from)
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    last_possible_duplicate_at: datetime | None
    in_flight: Mapping[str, Any] | None

    @property
    def cursor_time(self) -> datetime | None:
        return time_of_key(self.cursor_key)

    @property
    def has_cursor(self) -> bool:
        return self.cursor_key is not None

    @property
    def cursor_ahead_of_database_clock(self) -> bool:
        moment = self.cursor_time
        return moment is not None and moment > self.database_now

    @property
    def lease_held(self) -> bool:
        return (
            self.lease_owner is not None
            and self.lease_expires_at is not None
            and self.lease_expires_at > self.database_now
        )

    @property
    def oldest_waiting_age_seconds(self) -> float | None:
        if self.waiting is None or self.waiting.oldest_at is None:
            return None
        return max(0.0, (self.database_now - self.waiting.oldest_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        waiting = self.waiting
        return {
            "workspace_id": self.workspace_id,
            "workspace_name": self.workspace_name,
            "workspace_status": self.workspace_status,
            "cursor_time": iso(self.cursor_time),
            "cursor_key": key_text(self.cursor_key),
            "cursor_source": self.cursor_source,
            "cursor_set_at": iso(self.cursor_set_at),
            "cursor_ahead_of_database_clock": self.cursor_ahead_of_database_clock,
            "legacy_watermark": iso(self.legacy_watermark),
            "next_run_starts_at": iso(self.first_cursor.starts_at) if self.first_cursor else None,
            "next_run_start_source": self.first_cursor.source if self.first_cursor else None,
            "waiting_messages": waiting.count if waiting else None,
            "waiting_messages_capped": waiting.capped if waiting else False,
            "waiting_counted_from": iso(waiting.counted_from) if waiting else None,
            "oldest_waiting_at": iso(waiting.oldest_at) if waiting else None,
            "oldest_waiting_age_seconds": _round(self.oldest_waiting_age_seconds),
            "lease_owner": self.lease_owner,
            "lease_expires_at": iso(self.lease_expires_at),
            "lease_held": self.lease_held,
            "last_success_at": iso(self.last_success_at),
            "last_attempt_at": iso(self.last_attempt_at),
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "last_possible_duplicate_at": iso(self.last_possible_duplicate_at),
            "in_flight": _plain(self.in_flight) if self.in_flight else None,
        }


@dataclass(frozen=True)
class StateReport:
    database_now: datetime
    timezone_name: str
    arrival_field: str
    waiting_count_cap: int | None  # None: exact counts (one workspace named)
    workspaces: list[WorkspaceState]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database_time": iso(self.database_now),
            "timezone": self.timezone_name,
            "arrival_field": self.arrival_field,
            "waiting_count_cap": self.waiting_count_cap,
            "count": len(self.workspaces),
            "workspaces": [workspace.as_dict() for workspace in self.workspaces],
        }


@dataclass(frozen=True)
class CursorMove:
    workspace_id: str
    workspace_name: str
    requested_time: datetime
    old_key: ArrivalKey | None  # the cursor, or the key of v1's watermark when only that existed
    old_source: str | None
    new_key: ArrivalKey
    direction: MoveDirection
    database_now: datetime
    host: str

    @property
    def old_time(self) -> datetime | None:
        return time_of_key(self.old_key)

    @property
    def new_time(self) -> datetime:
        moment = time_of_key(self.new_key)
        assert moment is not None
        return moment

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "workspace_name": self.workspace_name,
            "direction": self.direction,
            "requested_time": iso(self.requested_time),
            "old_cursor_time": iso(self.old_time),
            "old_cursor_key": key_text(self.old_key),
            "old_cursor_source": self.old_source,
            "new_cursor_time": iso(self.new_time),
            "new_cursor_key": key_text(self.new_key),
            "database_time": iso(self.database_now),
            "host": self.host,
        }


@dataclass(frozen=True)
class MoveResult:
    move: CursorMove
    state_after: WorkspaceState

    def as_dict(self) -> dict[str, Any]:
        return {**self.move.as_dict(), "state": self.state_after.as_dict()}


# --- reading -------------------------------------------------------------------------


def state(settings: Settings, workspace_id: str | None) -> StateReport:
    """`wa-export state [WORKSPACE_ID]`: every active workspace, or the one named (any status)."""
    if workspace_id is not None:
        parse_workspace_id(workspace_id)  # a malformed id fails before connecting
    with open_store(settings) as store, mongo_errors(settings):
        now = store.database_now()
        if workspace_id is not None:
            workspaces = store.workspaces_by_id([workspace_id])
            cap: int | None = None
        else:
            workspaces = store.active_workspaces()
            cap = WAITING_COUNT_CAP
        documents = read_state_documents(store, [workspace.id for workspace in workspaces], single=workspace_id is not None)
        states = workspace_states(store, workspaces, documents, now, cap)
        return StateReport(now, settings.timezone_name, settings.export_arrival_field, cap, states)


def read_state_documents(store: Store, workspace_ids: Sequence[str], *, single: bool = False) -> dict[str, dict[str, Any]]:
    """The export_state documents of these workspaces, in one query."""
    if single:
        found = [store.export_state.find_one({"_id": workspace_ids[0]})] if workspace_ids else []
        return {document["_id"]: document for document in found if document is not None}
    wanted = set(workspace_ids)
    # All documents in one read (as a scheduled run does), not one query per workspace.
    return {document["_id"]: document for document in store.export_state.find({}) if document["_id"] in wanted}


def workspace_states(
    store: Store,
    workspaces: Sequence[Workspace],
    documents: Mapping[str, Mapping[str, Any]],
    now: datetime,
    cap: int | None,
) -> list[WorkspaceState]:
    settings = store.settings
    without_position = [
        workspace.id for workspace in workspaces if position_key(settings, documents.get(workspace.id, {}), now) is None
    ]
    original_exports = original_service_exports(store, without_position)
    states = []
    for workspace in workspaces:
        document = documents.get(workspace.id, {})
        cursor = document.get("cursor")
        cursor_key = cursor if is_arrival_key(cursor) else None
        watermark = as_utc_or_none(document.get("watermark"))
        first: FirstCursor | None = None
        from_key = position_key(settings, document, now)
        if from_key is None:
            first = first_cursor_preview(settings, original_exports.get(workspace.id), now)
            if first.starts_at is not None:
                from_key = key_for_time(settings.export_arrival_field, first.starts_at)
        waiting = count_waiting(store, workspace, from_key, cap) if from_key is not None else None
        states.append(_workspace_state(settings, workspace, document, now, cursor_key, watermark, first, waiting))
    return states


def position_key(settings: Settings, document: Mapping[str, Any], now: datetime) -> ArrivalKey | None:
    """Where a workspace's undelivered messages start: its cursor, or v1's watermark as the engine migrates it."""
    cursor = document.get("cursor")
    if is_arrival_key(cursor):
        return comparable_key(settings.export_arrival_field, cursor)
    watermark = as_utc_or_none(document.get("watermark"))
    if watermark is not None:
        return key_for_time(settings.export_arrival_field, min(watermark, now))  # never past the clock
    return None


def _workspace_state(
    settings: Settings,
    workspace: Workspace,
    document: Mapping[str, Any],
    now: datetime,
    cursor_key: ArrivalKey | None,
    watermark: datetime | None,
    first: FirstCursor | None,
    waiting: Waiting | None,
) -> WorkspaceState:
    in_flight = document.get("in_flight")
    last_error = document.get("last_error")
    owner = document.get("lease_owner")
    source = document.get("cursor_source")
    return WorkspaceState(
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        workspace_status=workspace.status,
        database_now=now,
        cursor_key=cursor_key,
        cursor_source=str(source) if cursor_key is not None and source is not None else None,
        cursor_set_at=as_utc_or_none(document.get("cursor_set_at")),
        legacy_watermark=watermark if cursor_key is None else None,
        first_cursor=first,
        waiting=waiting,
        lease_owner=str(owner) if owner is not None else None,
        lease_expires_at=as_utc_or_none(document.get("lease_expires_at")),
        last_success_at=as_utc_or_none(document.get("last_success_at")),
        last_attempt_at=as_utc_or_none(document.get("last_attempt_at")),
        consecutive_failures=count_or_zero(document.get("consecutive_failures")),
        last_error=redact(str(last_error), settings.secrets()) if last_error else None,
        last_possible_duplicate_at=as_utc_or_none(document.get("last_possible_duplicate_at")),
        in_flight=in_flight if isinstance(in_flight, Mapping) and in_flight else None,
    )


def original_service_exports(store: Store, workspace_ids: Sequence[str]) -> dict[str, datetime]:
    """Each workspace's latest completed export by the original service, in one query per 5,000 workspaces.

    The original service wrote `workspace_id` as a string and no `run_id`; every
    entry this tool writes has a `run_id`.
    """
    latest: dict[str, datetime] = {}
    for offset in range(0, len(workspace_ids), CHAT_IDS_PER_QUERY):
        chunk = list(workspace_ids[offset : offset + CHAT_IDS_PER_QUERY])
        pipeline = [
            {
                "$match": {
                    "workspace_id": {"$in": chunk},
                    "export_type": "whatsapp_messages",
                    "status": "completed",
                    "run_id": {"$exists": False},
                }
            },
            {"$group": {"_id": "$workspace_id", "last": {"$max": "$export_timestamp"}}},
        ]
        for group in store.export_logs.aggregate(pipeline):
            moment = as_utc_or_none(group.get("last"))
            if moment is not None:
                latest[str(group["_id"])] = moment
    return latest


def first_cursor_preview(settings: Settings, original_export: datetime | None, now: datetime) -> FirstCursor:
    """The first cursor a scheduled run will set: the original service's last export if recent, else one interval."""
    if original_export is not None and now - original_export <= timedelta(hours=settings.export_backfill_max_hours):
        return FirstCursor("original_service", min(original_export, now))
    return FirstCursor("first_interval", None)


def workspace_chat_ids(store: Store, workspace: Workspace) -> list[object]:
    """The workspace's chats, each in both id forms a message's chat_id may hold.

    A chat whose workspace_id is not exactly this workspace (an array naming
    several, another type) belongs to nobody: its messages are never delivered,
    so they are not waiting.
    """
    ids: list[object] = []
    query = {"workspace_id": {"$in": [workspace.object_id, workspace.id]}}
    for document in store.chats.find(query, {"workspace_id": 1}):
        owner = document.get("workspace_id")
        if not (isinstance(owner, (ObjectId, str)) and str(owner) == workspace.id):
            continue
        chat_id = document["_id"]
        ids.append(chat_id)
        if isinstance(chat_id, ObjectId):
            ids.append(str(chat_id))
    return ids


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
        if is_arrival_key(key) and (oldest is None or _earlier(key, oldest)):
            oldest = key
        if capped:
            break
    return Waiting(total, capped, time_of_key(oldest), counted_from)


def _earlier(key: ArrivalKey, other: ArrivalKey) -> bool:
    if type(key) is type(other):
        return key < other  # type: ignore[operator]
    return time_of_key(key) < time_of_key(other)  # type: ignore[operator]


def _field_value(document: Mapping[str, Any], dotted: str) -> object:
    value: object = document
    for part in dotted.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


# --- moving --------------------------------------------------------------------------


def move_cursor(settings: Settings, workspace_id: str | None, to: str) -> MoveResult:
    """`wa-export state WORKSPACE_ID --move-to TIME`: set the cursor to key(TIME), unless a run holds the lease.

    Back re-delivers what arrived from TIME on; forward skips what arrived
    before it. One conditional update (the lease must be free or expired on
    the database clock) makes the check and the move one atomic step. The
    in_flight marker is left alone: the engine still needs it to flag a
    possible duplicate. Every move is recorded in system_logs.
    """
    if workspace_id is None:
        raise UsageProblem("--move-to moves one workspace's cursor: give its WORKSPACE_ID, e.g. wa-export state ID --move-to TIME.")
    parse_workspace_id(workspace_id)
    moment = parse_time(to, "--move-to", settings.export_timezone)
    field = settings.export_arrival_field
    with open_store(settings) as store, mongo_errors(settings):
        workspace = store.workspaces_by_id([workspace_id])[0]
        now = store.database_now()
        if moment > now:
            raise UsageProblem(
                f"--move-to {to!r} is later than the database clock ({_local(now, settings)}): a cursor there would skip "
                "messages that have not arrived yet; give a time in the past."
            )
        new_key = key_for_time(field, moment)
        try:
            before = store.export_state.find_one_and_update(
                {"_id": workspace.id, "$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}]},
                {
                    "$set": {"cursor": new_key, "cursor_source": MOVED_SOURCE, "cursor_set_at": now, "updated_at": now},
                    "$setOnInsert": {"created_at": now},
                },
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            # The document exists and its lease is live: the upsert could not match it.
            raise _busy(store, workspace, settings) from None
        old_key, old_source = _old_position(before, field)
        move = CursorMove(
            workspace_id=workspace.id,
            workspace_name=workspace.name,
            requested_time=moment,
            old_key=old_key,
            old_source=old_source,
            new_key=new_key,
            direction=_direction(old_key, new_key),
            database_now=now,
            host=socket.gethostname(),
        )
        _record_move(store, move, settings)
        documents = read_state_documents(store, [workspace.id], single=True)
        return MoveResult(move, workspace_states(store, [workspace], documents, now, None)[0])


def _old_position(before: Mapping[str, Any] | None, field: str) -> tuple[ArrivalKey | None, str | None]:
    if before is None:
        return None, None
    cursor = before.get("cursor")
    if is_arrival_key(cursor):
        source = before.get("cursor_source")
        return cursor, str(source) if source is not None else None
    watermark = as_utc_or_none(before.get("watermark"))
    if watermark is not None:
        return key_for_time(field, watermark), "legacy_watermark"
    return None, None


def _direction(old_key: ArrivalKey | None, new_key: ArrivalKey) -> MoveDirection:
    if old_key is None:
        return "created"
    old_time, new_time = time_of_key(old_key), time_of_key(new_key)
    assert old_time is not None and new_time is not None
    if type(old_key) is type(new_key) and old_key == new_key:
        return "unchanged"
    if type(old_key) is type(new_key):
        return "back" if new_key < old_key else "forward"  # type: ignore[operator]
    return "back" if new_time <= old_time else "forward"


def _busy(store: Store, workspace: Workspace, settings: Settings) -> WorkspaceBusy:
    document = store.export_state.find_one({"_id": workspace.id}, {"lease_owner": 1, "lease_expires_at": 1}) or {}
    expires = as_utc_or_none(document.get("lease_expires_at"))
    until = f" until {_local(expires, settings)}" if expires else ""
    owner = document.get("lease_owner") or "another run"
    return WorkspaceBusy(
        f"Workspace {workspace.id} is being exported by {owner} (lease{until}); its cursor was not moved: "
        "run the command again once that run has finished."
    )


def _record_move(store: Store, move: CursorMove, settings: Settings) -> None:
    new = f"{iso(move.new_time)} (key {key_text(move.new_key)})"
    if move.old_key is None:
        change = f"created at {new} (it had none)"
    else:
        old = f"{iso(move.old_time)} (key {key_text(move.old_key)}, {move.old_source or 'unknown source'})"
        change = f"moved {move.direction} from {old} to {new}"
    message = f"cursor of workspace {move.workspace_id} {change} by wa-export state on host {move.host}"
    try:
        store.system_logs.insert_one(
            {
                "event_type": CURSOR_MOVED_EVENT,
                "message": message,
                "timestamp": move.database_now,
                "service": SERVICE_NAME,
                "kind": "cursor_move",
                "workspace_id": move.workspace_id,
                "host": move.host,
                "direction": move.direction,
                "requested_time": move.requested_time,
                "old_cursor": move.old_key,
                "old_cursor_time": move.old_time,
                "old_cursor_source": move.old_source,
                "new_cursor": move.new_key,
                "new_cursor_time": move.new_time,
            }
        )
    except PyMongoError as error:
        raise MongoUnavailable(
            f"The cursor of workspace {move.workspace_id} was moved to {iso(move.new_time)}, but the move could not "
            f"be recorded in system_logs ({describe_mongo_error(error, settings)})"
        ) from None


def _local(moment: datetime, settings: Settings) -> str:
    return f"{format_local(moment, settings.export_timezone, SECOND_FORMAT)} {settings.timezone_name}"


# --- JSON ------------------------------------------------------------------------------


def _plain(value: object) -> object:
    """A document value as JSON-friendly data: keys and ids as text, times as ISO 8601."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, datetime):
        return iso(as_utc_or_none(value))
    if isinstance(value, ObjectId):
        return str(value)
    return value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def states_by_id(states: Iterable[WorkspaceState]) -> dict[str, WorkspaceState]:
    return {item.workspace_id: item for item in states}
