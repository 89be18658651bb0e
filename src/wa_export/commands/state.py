"""`wa-export state`: where each workspace's scheduled delivery stands (by the database's clock), and moving one
workspace's cursor (logged; --move-past makes it the smallest key after one message).
Why this module is long: the report of every workspace's state, and the two ways to move a cursor that report on it."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.errors import DuplicateKeyError, PyMongoError

from wa_export.clock import SECOND_FORMAT, as_utc_or_none, iso, parse_time
from wa_export.errors import MongoUnavailable, UsageProblem, WorkspaceBusy
from wa_export.redaction import redact
from wa_export.settings import ID_FORM, Settings
from wa_export.store import logs
from wa_export.store import state as stored
from wa_export.store.arrivals import ArrivalKey, ForeignCursor, Key, is_key, key_order, key_text, time_of
from wa_export.store.connection import (
    Store,
    Workspace,
    describe_mongo_error,
    mongo_errors,
    open_store,
    parse_workspace_id,
)
from wa_export.store.ownership import as_object_id, owner_of
from wa_export.store.waiting import Waiting, count_waiting, position_key, workspace_chat_ids
from wa_export.units import count_or_zero, local_time
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, decide, resolve

WAITING_COUNT_CAP = 10_000
_SHOWN_DERIVED = {"database_now", "cursor_key", "first_cursor", "waiting", "in_flight"}  # as_dict shows them its way
_STORED_TIMES = (
    "cursor_set_at",
    "lease_expires_at",
    "last_success_at",
    "last_attempt_at",
    "last_possible_duplicate_at",
)


@dataclass(frozen=True)
class WorkspaceReport:
    workspace_id: str
    workspace_name: str
    workspace_status: str
    database_now: datetime
    cursor_key: Key | None
    cursor_source: str | None
    cursor_set_at: datetime | None
    legacy_watermark: datetime | None  # v1's position; the next run turns it into a cursor
    first_cursor: stored.FirstCursor | None  # where the next run starts a workspace without a position
    waiting: Waiting | None  # None: not counted (no position to count from)
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_success_at: datetime | None
    last_attempt_at: datetime | None
    consecutive_failures: int
    last_error: str | None
    last_possible_duplicate_at: datetime | None
    in_flight: Mapping[str, Any] | None
    # The workspace's own clock, each with where it comes from (workspace_settings.Resolved.where).
    time_zone: str = ""
    time_zone_from: str = ""
    schedule: str = "every"
    schedule_from: str = ""
    due: bool = True  # the next scheduled run delivers it
    next_due_at: datetime | None = None  # not due: the slot from which a scheduled run delivers it (None: off)
    setting_problem: str | None = None  # an invalid zone or schedule in its document: scheduled runs fail it
    cursor_problem: str | None = None  # a cursor of another EXPORT_ARRIVAL_FIELD: scheduled runs fail it, as here

    @property
    def cursor_time(self) -> datetime | None:
        return time_of(self.cursor_key)

    @property
    def next_run_starts_at(self) -> datetime | None:
        """Known ahead only where the original service's last export says."""
        first = self.first_cursor
        return first.starts_at if first is not None and first.source == "original_service" else None

    @property
    def has_cursor(self) -> bool:
        return self.cursor_key is not None

    @property
    def cursor_ahead_of_database_clock(self) -> bool:
        moment = self.cursor_time
        return moment is not None and moment > self.database_now

    @property
    def lease_held(self) -> bool:
        expires = self.lease_expires_at
        return self.lease_owner is not None and expires is not None and expires > self.database_now

    @property
    def oldest_waiting_age_seconds(self) -> float | None:
        if self.waiting is None or self.waiting.oldest_at is None:
            return None
        return max(0.0, (self.database_now - self.waiting.oldest_at).total_seconds())

    def as_dict(self) -> dict[str, Any]:
        """The stored fields as they are (Output.json writes times as ISO text), then what is derived from them."""
        waiting, age = self.waiting, self.oldest_waiting_age_seconds
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in _SHOWN_DERIVED},
            "in_flight": self.in_flight,
            "cursor_time": iso(self.cursor_time),
            "cursor_key": key_text(self.cursor_key),
            "cursor_ahead_of_database_clock": self.cursor_ahead_of_database_clock,
            "next_run_starts_at": iso(self.next_run_starts_at),
            "next_run_start_source": self.first_cursor.source if self.first_cursor else None,
            "waiting_messages": waiting.count if waiting else None,
            "waiting_messages_capped": waiting.capped if waiting else False,
            "waiting_counted_from": iso(waiting.counted_from) if waiting else None,
            "oldest_waiting_at": iso(waiting.oldest_at) if waiting else None,
            "oldest_waiting_age_seconds": None if age is None else round(age, 3),
            "lease_held": self.lease_held,
        }


@dataclass(frozen=True)
class StateReport:
    database_now: datetime
    timezone_name: str
    arrival_field: str
    waiting_count_cap: int | None  # None: exact counts (one workspace named)
    workspaces: list[WorkspaceReport]

    def as_dict(self) -> dict[str, Any]:
        return {
            "database_time": iso(self.database_now),
            "timezone": self.timezone_name,
            "arrival_field": self.arrival_field,
            "waiting_count_cap": self.waiting_count_cap,
            "count": len(self.workspaces),
            "workspaces": [workspace.as_dict() for workspace in self.workspaces],
        }


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
    originals = stored.original_exports(store, unplaced, now)
    reports = []
    for workspace in workspaces:
        document = documents.get(workspace.id, {})
        from_key, first = positions[workspace.id], None
        if from_key is None and workspace.id not in cursor_problems:
            # As the next scheduled run will set it (its end is not known yet: "now" stands in).
            first = stored.first_cursor(
                settings, ArrivalKey(settings.export_arrival_field), now, now, None, originals.get(workspace.id)
            )
            from_key = first.key if first.source == "original_service" else None
        cursor, source, owner = document.get("cursor"), document.get("cursor_source"), document.get("lease_owner")
        cursor_key = cursor if is_key(cursor) else None
        last_error, in_flight = document.get("last_error"), document.get("in_flight")
        zone, schedule = resolve(TIME_ZONE, workspace, settings), resolve(SCHEDULE, workspace, settings)
        decision = None
        if zone.value is not None and schedule.value is not None:
            served = stored.WorkspaceState.from_document(workspace.id, document).served
            decision = decide(schedule.value, zone.value, now, served)
        times: dict[str, Any] = {name: as_utc_or_none(document.get(name)) for name in _STORED_TIMES}
        reports.append(
            WorkspaceReport(
                workspace_id=workspace.id,
                workspace_name=workspace.name,
                workspace_status=workspace.status,
                database_now=now,
                cursor_key=cursor_key,
                cursor_source=str(source) if cursor_key is not None and source is not None else None,
                legacy_watermark=as_utc_or_none(document.get("watermark")) if cursor_key is None else None,
                first_cursor=first,
                waiting=count_waiting(store, workspace, from_key, cap) if from_key is not None else None,
                lease_owner=str(owner) if owner is not None else None,
                consecutive_failures=count_or_zero(document.get("consecutive_failures")),
                last_error=redact(str(last_error), settings.secrets()) if last_error else None,
                in_flight=in_flight if isinstance(in_flight, Mapping) and in_flight else None,
                time_zone=str(zone.value or ""),
                time_zone_from=zone.where,
                schedule=str(schedule.value or ""),
                schedule_from=schedule.where,
                due=decision is not None and decision.due,
                next_due_at=decision.next_due if decision is not None else None,
                setting_problem=zone.problem or schedule.problem,
                cursor_problem=cursor_problems.get(workspace.id),
                **times,
            )
        )
    return reports


# "already_past": --move-past of a message the cursor is already beyond; nothing was written.
MoveDirection = Literal["back", "forward", "unchanged", "created", "already_past"]


@dataclass(frozen=True)
class CursorMove:
    workspace_id: str
    workspace_name: str
    requested_time: datetime
    old_key: Key | None  # the cursor, or the key of v1's watermark when only that existed
    old_source: str | None
    new_key: Key
    direction: MoveDirection
    database_now: datetime
    past_message_id: str | None = None  # --move-past: the one message skipped
    state_after: WorkspaceReport | None = None
    host: str = field(default_factory=socket.gethostname)

    @property
    def old_time(self) -> datetime | None:
        return time_of(self.old_key)

    @property
    def new_time(self) -> datetime:
        moment = time_of(self.new_key)
        assert moment is not None
        return moment

    def new_position(self, settings: Settings) -> str:
        """Where the cursor now stands, as sentences say it: the time to the second, zone named, and the key."""
        return f"{local_time(self.new_time, settings, SECOND_FORMAT, zoned=True)} (key {key_text(self.new_key)})"

    def change(self, settings: Settings) -> str:
        """ "created at NEW", or "moved DIRECTION from OLD to NEW" with the old cursor's source."""
        if self.old_key is None:
            return f"created at {self.new_position(settings)}"
        old = local_time(self.old_time, settings, SECOND_FORMAT, zoned=True)
        old += f" (key {key_text(self.old_key)}, {self.old_source or 'unknown source'})"
        return f"moved {self.direction} from {old} to {self.new_position(settings)}"

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
            "past_message_id": self.past_message_id,
            "state": self.state_after.as_dict() if self.state_after is not None else None,
        }


def move_cursor(settings: Settings, workspace_id: str | None, to: str) -> CursorMove:
    workspace_id = _one_workspace(workspace_id, "--move-to TIME")
    moment = parse_time(to, "--move-to", settings.export_timezone)
    with open_store(settings) as store, mongo_errors(settings):
        workspace = store.workspaces_by_id([workspace_id])[0]
        now = store.database_now()
        if moment > now:
            raise UsageProblem(
                f"--move-to {to!r} is later than the database clock ({local_time(now, settings, SECOND_FORMAT, zoned=True)}): a cursor there would skip "
                "messages that have not arrived yet; give a time in the past."
            )
        return _move(store, workspace, now, ArrivalKey(settings.export_arrival_field).at(moment), moment)


def move_cursor_past(settings: Settings, workspace_id: str | None, message_id: str) -> CursorMove:
    workspace_id = _one_workspace(workspace_id, "--move-past MESSAGE_ID")
    try:
        message_object_id = ObjectId(message_id.strip())
    except InvalidId:
        raise UsageProblem(
            f"--move-past {message_id!r} is not a message id: expected the message's _id, {ID_FORM}."
        ) from None
    arrival = ArrivalKey(settings.export_arrival_field)
    with open_store(settings) as store, mongo_errors(settings):
        workspace = store.workspaces_by_id([workspace_id])[0]
        message = store.messages.find_one({"_id": message_object_id}, {"chat_id": 1, arrival.field: 1})
        if message is None:
            raise UsageProblem(
                f"No message with id {message_object_id} in database {settings.mongodb_database!r}; "
                f"check the id (the message's _id, {ID_FORM})."
            )
        # Refuse a message that this workspace's scheduled runs would never deliver: another's, or nobody's.
        chat_id = as_object_id(message.get("chat_id"))
        chat = store.chats.find_one({"_id": chat_id}, {"workspace_id": 1}) if chat_id is not None else None
        owner = owner_of(chat) if chat is not None else None
        if owner != workspace.id:
            whose = f"workspace {owner}" if owner is not None else "no single workspace"
            raise UsageProblem(
                f"Message {message_object_id} belongs to {whose}, not to workspace {workspace.id}; its cursor was not "
                "moved: give the workspace whose export stopped at that message."
            )
        message_key = arrival.of(message)
        if not is_key(message_key) or not arrival.usable(message_key):
            raise UsageProblem(
                f"Message {message_object_id} has no {arrival.type_name} in {arrival.field}: scheduled runs never "
                "deliver it, so there is nothing to move past."
            )
        now = store.database_now()
        document = stored.read_state_documents(store, [workspace.id], single=True).get(workspace.id, {})
        position = _delivery_position(settings, document, now)
        requested, past_id = time_of(message_key) or now, str(message_object_id)
        if message_key < position:  # both keys of the configured field: delivered (or skipped) already
            return _move(store, workspace, now, position, requested, past_id, already_past=document)
        chat_ids = {"chat_id": {"$in": workspace_chat_ids(store, workspace)}}
        new_key = _key_just_after(store, workspace, chat_ids, message_key, message_object_id)
        between = {arrival.field: {"$gte": position, "$lt": message_key}}  # skipped too if moved past
        earlier = message_key != position and store.messages.count_documents({**chat_ids, **between})
        if earlier:
            raise UsageProblem(
                f"{earlier} message(s) of workspace {workspace.id} arrived after its cursor and before message "
                f"{message_object_id}: moving past it would skip them too; let a scheduled run deliver them first, "
                "or skip them all deliberately with --move-to."
            )
        return _move(store, workspace, now, new_key, requested, past_id, expected_cursor=document.get("cursor"))


def _one_workspace(workspace_id: str | None, option: str) -> str:
    if workspace_id is None:
        name = option.split()[0]
        raise UsageProblem(
            f"{name} moves one workspace's cursor: give its WORKSPACE_ID, e.g. wa-export state ID {option}."
        )
    parse_workspace_id(workspace_id)
    return workspace_id


def _delivery_position(settings: Settings, document: Mapping[str, Any], now: datetime) -> Key:
    """Where undelivered messages start: the cursor, v1's watermark, or the earliest start of a first run."""
    position = position_key(settings, document, now)
    if position is not None:
        return position
    interval = timedelta(minutes=settings.export_interval_minutes, seconds=settings.export_lag_seconds)
    return ArrivalKey(settings.export_arrival_field).at(now - interval)


def _key_just_after(
    store: Store, workspace: Workspace, chat_ids: Mapping[str, Any], message_key: Key, message_id: ObjectId
) -> Key:
    """The smallest arrival key after `message_key`; a date key (milliseconds) can only be passed as a whole."""
    if isinstance(message_key, ObjectId):
        following = int.from_bytes(message_key.binary, "big") + 1
        return ObjectId(following.to_bytes(12, "big"))  # 2**96 - 1 is no writer's ObjectId
    field = store.settings.export_arrival_field
    tied = store.messages.count_documents({**chat_ids, field: message_key, "_id": {"$ne": message_id}})
    if tied:
        raise UsageProblem(
            f"{tied} other message(s) of workspace {workspace.id} share message {message_id}'s arrival time in "
            f"{field} ({key_text(message_key)}): a date cursor cannot pass one of them alone; use --move-to "
            "to skip them all, or raise EXPORT_MAX_ATTACHMENT_MB."
        )
    return message_key + timedelta(milliseconds=1)  # BSON dates hold milliseconds


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
    """Write the cursor (lease free, and the cursor still as read), record the move, read the state after it;
    `already_past` (the state document) reports a message the cursor is beyond, writing nothing."""
    before = already_past
    if already_past is None:
        try:
            before = stored.set_moved_cursor(store, workspace.id, now, new_key, expected_cursor=expected_cursor)
        except DuplicateKeyError:
            # The document exists but did not match: its lease is live, or a run moved the cursor meanwhile.
            raise _busy(store, workspace) from None
    # The old position: the cursor, else the key of v1's watermark.
    before, old_key, old_source = before or {}, None, None
    if is_key(cursor := before.get("cursor")):
        old_key, source = cursor, before.get("cursor_source")
        old_source = str(source) if source is not None else None
    elif (watermark := as_utc_or_none(before.get("watermark"))) is not None:
        old_key, old_source = ArrivalKey(store.settings.export_arrival_field).at(watermark), "legacy_watermark"
    direction: MoveDirection = "created"
    if already_past is not None:  # the cursor stays where it is (or, without one, the delivery position given)
        direction, new_key = "already_past", old_key or new_key
    elif old_key is not None:
        unchanged = type(old_key) is type(new_key) and old_key == new_key
        direction = "unchanged" if unchanged else "back" if key_order(new_key) < key_order(old_key) else "forward"
    args = (workspace.id, workspace.name, requested_time, old_key, old_source, new_key, direction, now)
    move = CursorMove(*args, past_message_id)
    if already_past is None:
        _record_move(store, move)
    return replace(move, state_after=_reports(store, [workspace], now, None)[0])


def _busy(store: Store, workspace: Workspace) -> WorkspaceBusy:
    owner, expires = stored.read_lease(store, workspace.id)
    if expires is None or expires <= store.database_now():
        return WorkspaceBusy(
            f"The cursor of workspace {workspace.id} changed while this command ran (a run just delivered); "
            "it was not moved: run the command again."
        )
    until = local_time(expires, store.settings, SECOND_FORMAT, zoned=True)
    return WorkspaceBusy(
        f"Workspace {workspace.id} is being exported by {owner or 'another run'} (lease until {until}); its cursor was not moved: "
        "run the command again once that run has finished."
    )


def _record_move(store: Store, move: CursorMove) -> None:
    # In EXPORT_TIMEZONE and named: `logs --system` shows this message under "times in <that zone>".
    change = move.change(store.settings) + (" (it had none)" if move.old_key is None else "")
    past = f" past message {move.past_message_id}" if move.past_message_id else ""
    message = f"cursor of workspace {move.workspace_id} {change}{past} by wa-export state on host {move.host}"
    try:
        details = logs.CursorMoveDetails(
            workspace_id=move.workspace_id,
            direction=move.direction,
            requested_time=move.requested_time,
            old_cursor=move.old_key,
            old_cursor_time=move.old_time,
            old_cursor_source=move.old_source,
            new_cursor=move.new_key,
            new_cursor_time=move.new_time,
            past_message_id=move.past_message_id,
        )
        logs.record_cursor_move(store.system_logs, message, move.database_now, details)
    except PyMongoError as error:
        when = local_time(move.new_time, store.settings, SECOND_FORMAT, zoned=True)
        raise MongoUnavailable(
            f"The cursor of workspace {move.workspace_id} was moved to {when}, but the move could not "
            f"be recorded in system_logs ({describe_mongo_error(error, store.settings)})"
        ) from None
