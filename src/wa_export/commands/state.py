"""`wa-export state`: where each workspace's scheduled delivery stands (moving a cursor: cursor_move.py).

"Now" is the database server's clock, the one leases are measured on. Counting
waiting messages costs a few queries per workspace: exact for one named
workspace; over all of them each count stops at WAITING_COUNT_CAP so that one
huge backlog cannot make the command slow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId

from wa_export.clock import as_utc_or_none, iso
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store.arrivals import ArrivalKey, Key, is_key, key_text, time_of
from wa_export.store.connection import Store, Workspace, mongo_errors, open_store, parse_workspace_id
from wa_export.store.state import FirstCursor, first_cursor, original_exports, read_state_documents
from wa_export.store.waiting import Waiting, count_waiting, position_key
from wa_export.units import count_or_zero

WAITING_COUNT_CAP = 10_000


@dataclass(frozen=True)
class WorkspaceReport:
    """One workspace's line of `wa-export state`: its export_state document as people read it."""

    workspace_id: str
    workspace_name: str
    workspace_status: str
    database_now: datetime
    cursor_key: Key | None
    cursor_source: str | None
    cursor_set_at: datetime | None
    legacy_watermark: datetime | None  # v1's position; the next run turns it into a cursor
    first_cursor: FirstCursor | None  # where the next run starts a workspace without a position
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
        return time_of(self.cursor_key)

    @property
    def next_run_starts_at(self) -> datetime | None:
        """Known ahead only where the original service's last export says; else one interval before that run's end."""
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
        waiting, age = self.waiting, self.oldest_waiting_age_seconds
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
            "next_run_starts_at": iso(self.next_run_starts_at),
            "next_run_start_source": self.first_cursor.source if self.first_cursor else None,
            "waiting_messages": waiting.count if waiting else None,
            "waiting_messages_capped": waiting.capped if waiting else False,
            "waiting_counted_from": iso(waiting.counted_from) if waiting else None,
            "oldest_waiting_at": iso(waiting.oldest_at) if waiting else None,
            "oldest_waiting_age_seconds": None if age is None else round(age, 3),
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
    """`wa-export state [WORKSPACE_ID]`: every active workspace, or the one named (any status)."""
    if workspace_id is not None:
        parse_workspace_id(workspace_id)  # a malformed id fails before connecting
    with open_store(settings) as store, mongo_errors(settings):
        now = store.database_now()
        workspaces = store.workspaces_by_id([workspace_id]) if workspace_id is not None else store.active_workspaces()
        cap = None if workspace_id is not None else WAITING_COUNT_CAP
        documents = read_state_documents(store, [w.id for w in workspaces], single=workspace_id is not None)
        states = workspace_states(store, workspaces, documents, now, cap)
        return StateReport(now, settings.timezone_name, settings.export_arrival_field, cap, states)


def workspace_states(
    store: Store,
    workspaces: Sequence[Workspace],
    documents: Mapping[str, Mapping[str, Any]],
    now: datetime,
    cap: int | None,
) -> list[WorkspaceReport]:
    settings = store.settings
    key = ArrivalKey(settings.export_arrival_field)
    positions = {workspace.id: position_key(settings, documents.get(workspace.id, {}), now) for workspace in workspaces}
    originals = original_exports(store, [id_ for id_, position in positions.items() if position is None], now)
    reports = []
    for workspace in workspaces:
        document = documents.get(workspace.id, {})
        from_key, first = positions[workspace.id], None
        if from_key is None:
            # As the next scheduled run will set it (its end is not known yet: "now" stands in).
            first = first_cursor(settings, key, now, now, None, originals.get(workspace.id))
            if first.source == "original_service":
                from_key = first.key
        waiting = count_waiting(store, workspace, from_key, cap) if from_key is not None else None
        cursor, source, owner = document.get("cursor"), document.get("cursor_source"), document.get("lease_owner")
        cursor_key = cursor if is_key(cursor) else None
        last_error, in_flight = document.get("last_error"), document.get("in_flight")
        reports.append(
            WorkspaceReport(
                workspace_id=workspace.id,
                workspace_name=workspace.name,
                workspace_status=workspace.status,
                database_now=now,
                cursor_key=cursor_key,
                cursor_source=str(source) if cursor_key is not None and source is not None else None,
                cursor_set_at=as_utc_or_none(document.get("cursor_set_at")),
                legacy_watermark=as_utc_or_none(document.get("watermark")) if cursor_key is None else None,
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
        )
    return reports


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
