"""`wa-export state`: where each workspace's scheduled delivery stands (by the database's clock), and moving one
workspace's cursor (logged; --move-past makes it the smallest key after one message)."""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import DuplicateKeyError, PyMongoError

from wa_export.clock import SECOND_FORMAT, as_utc_or_none, parse_time
from wa_export.errors import MongoUnavailable, UsageProblem, WorkspaceBusy
from wa_export.redaction import redact
from wa_export.settings import ID_FORM, Settings
from wa_export.store import connection, logs
from wa_export.store import state as stored
from wa_export.store.arrivals import ArrivalKey, ForeignCursor, Key, is_key, key_order, key_text, time_of
from wa_export.store.connection import Store, Workspace, mongo_errors, open_store, parse_workspace_id
from wa_export.store.ownership import Waiting, as_object_id, chats_of_workspace, count_waiting, owner_of
from wa_export.store.state import position_key
from wa_export.units import local_time
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, decide, resolve

WAITING_COUNT_CAP = 10_000
_SHOWN_DERIVED = {"first_cursor", "waiting"}  # as_dict shows them its way
_WAITING_KEYS = ("waiting_messages", "waiting_messages_capped", "waiting_counted_from", "oldest_waiting_at")
_MOVE_SHOWN_ITS_WAY = {"old_cursor", "new_cursor", "database_now", "state_after"}  # CursorMove.as_dict
_UNLOGGED = {"workspace_name", "database_now", "state_after", "host"}  # system_logs has the rest of a CursorMove


@dataclass(frozen=True)
class WorkspaceReport:
    workspace_id: str
    workspace_name: str
    workspace_status: str
    cursor_key: Key | None
    cursor_time: datetime | None
    cursor_ahead_of_database_clock: bool
    cursor_source: str | None
    cursor_set_at: datetime | None
    legacy_watermark: datetime | None  # v1's position; the next run turns it into a cursor
    first_cursor: stored.FirstCursor | None  # where the next run starts a workspace without a position
    next_run_starts_at: datetime | None  # known ahead only where the original service's last export says
    waiting: Waiting | None  # None: not counted (no position to count from)
    oldest_waiting_age_seconds: float | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    lease_held: bool
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    last_possible_duplicate_at: datetime | None
    in_flight: Mapping[str, Any] | None
    # The workspace's own clock (workspace_settings), each with where it comes from (workspace_settings.Resolved.where).
    time_zone: str
    time_zone_from: str
    schedule: str
    schedule_from: str
    due: bool  # the next scheduled run delivers it
    next_due_at: datetime | None  # not due: the slot from which a scheduled run delivers it (None: off)
    setting_problem: str | None  # an invalid zone or schedule in its document: scheduled runs fail it
    cursor_problem: str | None  # a cursor of another EXPORT_ARRIVAL_FIELD: scheduled runs fail it, as here

    @property
    def has_cursor(self) -> bool:
        return self.cursor_key is not None

    def as_dict(self) -> dict[str, Any]:
        """The facts as they are (Output.json writes times and keys as text), the waiting count's spelled out."""
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SHOWN_DERIVED}
        w = self.waiting
        counted = (w.count, w.capped, w.counted_from, w.oldest_at) if w else (None, False, None, None)
        start = {"next_run_start_source": self.first_cursor.source if self.first_cursor else None}
        return shown | start | dict(zip(_WAITING_KEYS, counted, strict=True))


@dataclass(frozen=True)
class StateReport:
    database_now: datetime
    timezone_name: str
    arrival_field: str
    waiting_count_cap: int | None  # None: exact counts (one workspace named)
    workspaces: list[WorkspaceReport]

    def as_dict(self) -> dict[str, Any]:
        workspaces = [workspace.as_dict() for workspace in self.workspaces]
        clock = {"database_time": self.database_now, "timezone": self.timezone_name}
        counted = {"arrival_field": self.arrival_field, "waiting_count_cap": self.waiting_count_cap}
        return clock | counted | {"count": len(workspaces), "workspaces": workspaces}


def state(settings: Settings, workspace_id: str | None) -> StateReport:
    if workspace_id is not None:
        parse_workspace_id(workspace_id)  # a malformed id fails before connecting
    with open_store(settings) as store, mongo_errors(settings):
        now = store.database_now()
        workspaces = store.workspaces_by_id([workspace_id]) if workspace_id is not None else store.active_workspaces()
        cap = None if workspace_id is not None else WAITING_COUNT_CAP
        states = _reports(store, workspaces, now, cap)
        return StateReport(now, settings.timezone_name, settings.export_arrival_field, cap, states)


def _reports(store: Store, workspaces: Sequence[Workspace], now: datetime, cap: int | None) -> list[WorkspaceReport]:
    """Without a cap (one workspace named) counts are exact and its document is read alone."""
    settings = store.settings
    documents = stored.read_state_documents(store, [w.id for w in workspaces], single=cap is None)
    positions: dict[str, Key | None] = {}
    cursor_problems: dict[str, str] = {}
    for workspace in workspaces:
        try:
            positions[workspace.id] = position_key(settings, documents.get(workspace.id, {}), now)
        except ForeignCursor as error:
            if cap is None:  # the one workspace asked for: its sentence is the answer
                raise
            positions[workspace.id], cursor_problems[workspace.id] = None, str(error)  # the others are still shown
    unplaced = [id_ for id_, position in positions.items() if position is None and id_ not in cursor_problems]
    originals = logs.original_exports(store, unplaced, now)
    reports = []
    for workspace in workspaces:
        document = documents.get(workspace.id, {})
        from_key, first = positions[workspace.id], None
        if from_key is None and workspace.id not in cursor_problems:
            # As the next scheduled run will set it (its end is not known yet: "now" stands in).
            first = stored.first_cursor(settings, now, now, None, originals.get(workspace.id))
            from_key = first.key if first.source == "original_service" else None
        known = stored.WorkspaceState.from_document(workspace.id, document)
        cursor_key, cursor_time = known.cursor_key, time_of(known.cursor_key)
        last_error, in_flight = document.get("last_error"), document.get("in_flight")
        zone, schedule = resolve(TIME_ZONE, workspace, settings), resolve(SCHEDULE, workspace, settings)
        decision = decide(schedule.value, zone.value, now, known.served) if zone.value and schedule.value else None
        waiting = count_waiting(store, workspace, from_key, cap) if from_key is not None else None
        age = (now - waiting.oldest_at).total_seconds() if waiting and waiting.oldest_at else None
        named = {
            "workspace_id": workspace.id,
            "workspace_name": workspace.name,
            "workspace_status": workspace.status,
            "cursor_key": cursor_key,
            "cursor_time": cursor_time,
            "cursor_ahead_of_database_clock": cursor_time is not None and cursor_time > now,
            "legacy_watermark": known.watermark if cursor_key is None else None,
            "first_cursor": first,
            "next_run_starts_at": first.starts_at if first and first.source == "original_service" else None,
            "waiting": waiting,
            "oldest_waiting_age_seconds": None if age is None else round(max(0.0, age), 3),
            "lease_owner": known.lease_owner,
            "lease_held": known.lease_held(now),
            "cursor_source": None
            if cursor_key is None or (source := document.get("cursor_source")) is None
            else str(source),
            "last_error": redact(str(last_error), settings.secrets()) if last_error else None,
            "in_flight": in_flight if isinstance(in_flight, Mapping) and in_flight else None,
            "time_zone": str(zone.value or ""),
            "time_zone_from": zone.where,
            "schedule": str(schedule.value or ""),
            "schedule_from": schedule.where,
            "due": decision is not None and decision.due,
            "next_due_at": decision.next_due if decision is not None else None,
            "setting_problem": zone.problem or schedule.problem,
            "cursor_problem": cursor_problems.get(workspace.id),
        }
        # The stored fields not named here are read from the document by their type.
        reports.append(WorkspaceReport(**connection.read_fields(WorkspaceReport, document, **named)))
    return reports


# "already_past": --move-past of a message the cursor is already beyond; nothing was written.
MoveDirection = Literal["back", "forward", "unchanged", "created", "already_past"]


@dataclass(frozen=True)
class CursorMove:
    workspace_id: str
    workspace_name: str
    requested_time: datetime
    old_cursor: Key | None  # the cursor, or the key of v1's watermark when only that existed
    old_cursor_time: datetime | None
    old_cursor_source: str | None
    new_cursor: Key
    new_cursor_time: datetime | None
    direction: MoveDirection
    database_now: datetime
    past_message_id: str | None = None  # --move-past: the one message skipped
    state_after: WorkspaceReport | None = None
    host: str = field(default_factory=socket.gethostname)

    def new_position(self, settings: Settings) -> str:
        """Where the cursor now stands, as sentences say it: the time to the second, zone named, and the key."""
        at = local_time(self.new_cursor_time, settings, SECOND_FORMAT, zoned=True)
        return f"{at} (key {key_text(self.new_cursor)})"

    def change(self, settings: Settings) -> str:
        """ "created at NEW", or "moved DIRECTION from OLD to NEW" with the old cursor's source."""
        if self.old_cursor is None:
            return f"created at {self.new_position(settings)}"
        old = f"{local_time(self.old_cursor_time, settings, SECOND_FORMAT, zoned=True)} (key {key_text(self.old_cursor)}, {self.old_cursor_source or 'unknown source'})"
        return f"moved {self.direction} from {old} to {self.new_position(settings)}"

    def as_dict(self) -> dict[str, Any]:
        facts = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _MOVE_SHOWN_ITS_WAY}
        keys = {"old_cursor_key": key_text(self.old_cursor), "new_cursor_key": key_text(self.new_cursor)}
        after = self.state_after.as_dict() if self.state_after is not None else None
        return facts | keys | {"database_time": self.database_now, "state": after}


def move_cursor(settings: Settings, workspace_id: str | None, to: str) -> CursorMove:
    workspace_id = _named_workspace(workspace_id, "--move-to TIME")
    moment = parse_time(to, "--move-to", settings.export_timezone)
    with _one_workspace(settings, workspace_id) as (store, workspace, now):
        if moment > now:
            problem = f"--move-to {to!r} is later than the database clock ({local_time(now, settings, SECOND_FORMAT, zoned=True)}): a cursor there would skip messages that have not arrived yet; give a time in the past."
            raise UsageProblem(problem)
        return _move(store, workspace, now, ArrivalKey(settings.export_arrival_field).at(moment), moment)


def move_cursor_past(settings: Settings, workspace_id: str | None, message_id: str) -> CursorMove:
    workspace_id = _named_workspace(workspace_id, "--move-past MESSAGE_ID")
    try:
        message_object_id = ObjectId(message_id.strip())
    except InvalidId:
        problem = f"--move-past {message_id!r} is not a message id: expected the message's _id, {ID_FORM}."
        raise UsageProblem(problem) from None
    arrival = ArrivalKey(settings.export_arrival_field)
    with _one_workspace(settings, workspace_id) as (store, workspace, now):
        message = store.messages.find_one({"_id": message_object_id}, {"chat_id": 1, arrival.field: 1})
        if message is None:
            problem = f"No message with id {message_object_id} in database {settings.mongodb_database!r}; check the id (the message's _id, {ID_FORM})."
            raise UsageProblem(problem)
        # Refuse a message that this workspace's scheduled runs would never deliver: another's, or nobody's.
        chat_id = as_object_id(message.get("chat_id"))
        chat = store.chats.find_one({"_id": chat_id}, {"workspace_id": 1}) if chat_id is not None else None
        owner = owner_of(chat) if chat is not None else None
        if owner != workspace.id:
            whose = f"workspace {owner}" if owner is not None else "no single workspace"
            problem = f"Message {message_object_id} belongs to {whose}, not to workspace {workspace.id}; its cursor was not moved: give the workspace whose export stopped at that message."
            raise UsageProblem(problem)
        message_key = arrival.of(message)
        if not is_key(message_key) or not arrival.usable(message_key):
            problem = f"Message {message_object_id} has no {arrival.type_name} in {arrival.field}: scheduled runs never deliver it, so there is nothing to move past."
            raise UsageProblem(problem)
        document = stored.read_state_documents(store, [workspace.id], single=True).get(workspace.id, {})
        # Where undelivered messages start: the cursor, v1's watermark, or the earliest start of a first run.
        lead = timedelta(minutes=settings.export_interval_minutes, seconds=settings.export_lag_seconds)
        position = position_key(settings, document, now) or arrival.at(now - lead)
        requested, past_id = time_of(message_key) or now, str(message_object_id)
        if message_key < position:  # both keys of the configured field: delivered (or skipped) already
            return _move(store, workspace, now, position, requested, past_id, already_past=document)
        chat_ids = {"chat_id": {"$in": chats_of_workspace(store.chats, workspace).message_chat_ids()}}
        new_key = _key_just_after(store, workspace, chat_ids, message_key, message_object_id)
        between = {arrival.field: {"$gte": position, "$lt": message_key}}  # skipped too if moved past
        earlier = message_key != position and store.messages.count_documents({**chat_ids, **between})
        if earlier:
            problem = f"{earlier} message(s) of workspace {workspace.id} arrived after its cursor and before message {message_object_id}: moving past it would skip them too; let a scheduled run deliver them first, or skip them all deliberately with --move-to."
            raise UsageProblem(problem)
        return _move(store, workspace, now, new_key, requested, past_id, expected_cursor=document.get("cursor"))


def _named_workspace(id_: str | None, option: str) -> str:
    """The WORKSPACE_ID a move needs, checked first (before the option's value and before connecting)."""
    if id_ is None:
        problem = f"{option.split()[0]} moves one workspace's cursor: give its WORKSPACE_ID, e.g. wa-export state ID {option}."
        raise UsageProblem(problem)
    parse_workspace_id(id_)
    return id_


@contextmanager
def _one_workspace(settings: Settings, id_: str) -> Iterator[tuple[Store, Workspace, datetime]]:
    """The workspace named, its store and the database's time."""
    with open_store(settings) as store, mongo_errors(settings):
        yield store, store.workspaces_by_id([id_])[0], store.database_now()


def _key_just_after(store: Store, workspace: Workspace, chats: dict[str, Any], key: Key, message_id: ObjectId) -> Key:
    """The smallest arrival key after `key`; a date key (milliseconds) can only be passed as a whole."""
    if isinstance(key, ObjectId):
        following = int.from_bytes(key.binary, "big") + 1
        return ObjectId(following.to_bytes(12, "big"))  # 2**96 - 1 is no writer's ObjectId
    field = store.settings.export_arrival_field
    tied = store.messages.count_documents({**chats, field: key, "_id": {"$ne": message_id}})
    if tied:
        problem = f"{tied} other message(s) of workspace {workspace.id} share message {message_id}'s arrival time in {field} ({key_text(key)}): a date cursor cannot pass one of them alone; use --move-to to skip them all, or raise EXPORT_MAX_ATTACHMENT_MB."
        raise UsageProblem(problem)
    return key + timedelta(milliseconds=1)  # BSON dates hold milliseconds


def _move(
    store: Store,
    workspace: Workspace,
    now: datetime,
    new_key: Key,
    requested_time: datetime,
    past_message_id: str | None = None,
    expected_cursor: object = stored.ANY_CURSOR,
    already_past: Mapping[str, Any] | None = None,
) -> CursorMove:
    """Write (lease free, cursor as read) and record the move; `already_past` (the document read) writes nothing."""
    settings, before = store.settings, already_past
    if already_past is None:
        try:
            before = stored.set_moved_cursor(store, workspace.id, now, new_key, expected_cursor=expected_cursor)
        except DuplicateKeyError:  # the document did not match: a live lease, or a run moved the cursor meanwhile
            lease = stored.read_states(store, [workspace.id]).get(workspace.id, stored.WorkspaceState(workspace.id))
            problem = f"The cursor of workspace {workspace.id} changed while this command ran (a run just delivered); it was not moved: run the command again."
            if lease.lease_held(store.database_now()):
                problem = f"Workspace {workspace.id} is being exported by {lease.lease_owner or 'another run'} (lease until {local_time(lease.lease_expires_at, settings, SECOND_FORMAT, zoned=True)}); its cursor was not moved: run the command again once that run has finished."
            raise WorkspaceBusy(problem) from None
    before = before or {}
    old_key = cursor if is_key(cursor := before.get("cursor")) else None
    source = before.get("cursor_source")
    old_source = source if old_key is not None and isinstance(source, str) else None
    if old_key is None and (watermark := as_utc_or_none(before.get("watermark"))) is not None:
        old_key, old_source = ArrivalKey(settings.export_arrival_field).at(watermark), "legacy_watermark"
    direction: MoveDirection = "created"
    if already_past is not None:  # the cursor stays where it is (or, without one, the delivery position given)
        direction, new_key = "already_past", old_key or new_key
    elif old_key is not None:
        unchanged = type(old_key) is type(new_key) and old_key == new_key
        direction = "unchanged" if unchanged else "back" if key_order(new_key) < key_order(old_key) else "forward"
    old, new = (old_key, time_of(old_key), old_source), (new_key, time_of(new_key))
    move = CursorMove(workspace.id, workspace.name, requested_time, *old, *new, direction, now, past_message_id)
    if already_past is None:
        # In EXPORT_TIMEZONE and named: `logs --system` shows this message under "times in <that zone>".
        change = move.change(settings) + (" (it had none)" if old_key is None else "")
        past = f" past message {past_message_id}" if past_message_id else ""
        message = f"cursor of workspace {workspace.id} {change}{past} by wa-export state on host {move.host}"
        try:
            details = {f.name: getattr(move, f.name) for f in fields(move) if f.name not in _UNLOGGED}
            logs.record_cursor_move(store.system_logs, message, now, details)
        except PyMongoError as error:
            problem = f"The cursor of workspace {workspace.id} was moved to {local_time(move.new_cursor_time, settings, SECOND_FORMAT, zoned=True)}, but the move could not be recorded in system_logs ({connection.describe_mongo_error(error, settings)})"
            raise MongoUnavailable(problem) from None
    return replace(move, state_after=_reports(store, [workspace], now, None)[0])
