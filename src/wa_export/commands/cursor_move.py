"""`wa-export state WORKSPACE_ID --move-to TIME`: move one workspace's cursor, never under a live lease.

Back re-delivers what arrived from TIME on; forward skips what arrived before
it. One conditional update (the lease must be free or expired on the database
clock) makes the check and the move one atomic step. The in_flight marker is
left alone: the engine still needs it to flag a possible duplicate. Every move
is recorded in system_logs.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

from wa_export.clock import SECOND_FORMAT, as_utc_or_none, format_local, iso, parse_time
from wa_export.commands.state import WorkspaceState, read_state_documents, workspace_states
from wa_export.errors import MongoUnavailable, UsageProblem, WorkspaceBusy
from wa_export.settings import Settings
from wa_export.store.arrival_keys import (
    ArrivalKey,
    arrival_order,
    is_arrival_key,
    key_for_time,
    key_text,
    time_of_key,
)
from wa_export.store.connection import (
    SERVICE_NAME,
    Store,
    Workspace,
    describe_mongo_error,
    mongo_errors,
    open_store,
    parse_workspace_id,
)

CURSOR_MOVED_EVENT = "cursor_moved"
MOVED_SOURCE = "moved"
MoveDirection = Literal["back", "forward", "unchanged", "created"]


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


def move_cursor(settings: Settings, workspace_id: str | None, to: str) -> MoveResult:
    """Set the cursor to key(TIME) unless a run holds the lease; return the move and the state after it."""
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
    if type(old_key) is type(new_key) and old_key == new_key:
        return "unchanged"
    return "back" if arrival_order(new_key) < arrival_order(old_key) else "forward"


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
