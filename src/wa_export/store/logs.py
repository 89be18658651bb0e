"""`export_logs` and `system_logs`: every write (the original service's fields first, ours after) and the reads.
An export_logs entry is the delivery ledger: what was sent to whom, its range (`resend`), its file's hash (`verify`)."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal, get_args

from bson import ObjectId
from pymongo import ASCENDING, DESCENDING

from wa_export.clock import as_utc_or_none
from wa_export.recipients import split_address_list
from wa_export.store.arrivals import Key, in_chunks, is_key
from wa_export.store.connection import SERVICE_NAME, Document, Documents, Store, Workspace, read_fields
from wa_export.workbook.fingerprint import Fingerprint

EXPORT_TYPE = "whatsapp_messages"
ExportStatus = Literal["completed", "failed", "sending"]
EXPORT_STATUSES: tuple[ExportStatus, ...] = get_args(ExportStatus)
STATUS_COMPLETED, STATUS_FAILED, STATUS_SENDING = EXPORT_STATUSES

EXPORT_RUN = "export_run"  # the `kind` of a run's system_logs event
TRIGGER_RESEND = "resend"  # an entry of `wa-export resend`: `resend_of` names the entry it repeats

MATCHES_SHOWN = 20  # every workbook is a new file, so one match is the rule: a bound, not a page size


@dataclass(frozen=True)
class ExportEntry:
    workspace: Workspace
    recipients: Sequence[str]
    run_id: str
    trigger: str
    export_timestamp: datetime  # the run's time
    message_count: int
    by_status: Mapping[str, int]
    anomalies: Mapping[str, int]
    window_start: datetime | None
    window_end: datetime | None
    file_path: str | None = None
    keys: tuple[Key, Key] | None = None  # a scheduled window in arrival keys (manual windows have none)
    part: int | None = None
    parts: int | None = None
    attachment: Fingerprint | None = None  # the emailed file: the delivery ledger (`verify` finds it by hash)
    resend_of: ObjectId | None = None


def insert_export(
    logs: Documents,
    entry: ExportEntry,
    now: datetime,
    *,
    status: ExportStatus,
    error: str | None = None,
    possible_duplicate: bool = False,
    log_id: ObjectId | None = None,
) -> None:
    keys, file, workspace = entry.keys, entry.attachment, entry.workspace
    document: Document = {} if log_id is None else {"_id": log_id}
    document |= {"workspace_id": workspace.id, "workspace_name": workspace.name, "export_type": EXPORT_TYPE}
    document |= {"export_timestamp": entry.export_timestamp, "message_count": entry.message_count}
    document |= {"file_path": entry.file_path, "email_sent_to": ", ".join(entry.recipients), "status": status}
    document |= {"error_message": error, "created_at": now, "updated_at": now}
    document |= {"window_start": entry.window_start, "window_end": entry.window_end}
    if keys is not None:
        document |= {"window_start_key": keys[0], "window_end_key": keys[1], "part": entry.part, "parts": entry.parts}
    if file is not None:
        document |= {"file_name": file.file_name, "attachment_sha256": file.sha256, "attachment_bytes": file.size}
    document |= {"trigger": entry.trigger, "run_id": entry.run_id, "by_status": dict(entry.by_status)}
    document |= {"anomalies": dict(entry.anomalies), "possible_duplicate": possible_duplicate}
    if entry.resend_of is not None:
        document["resend_of"] = entry.resend_of
    logs.insert_one(document)


def _mark(
    logs: Documents, where: Document, now: datetime, status: ExportStatus, error: str | None, **more: Any
) -> None:
    logs.update_one(where, {"$set": {"status": status, "error_message": error, **more, "updated_at": now}})


def mark_completed(logs: Documents, log_id: object, now: datetime) -> None:
    _mark(logs, {"_id": log_id}, now, STATUS_COMPLETED, None)


def mark_failed(logs: Documents, log_id: object, error: str, now: datetime, *, outcome_unknown: bool) -> None:
    """`outcome_unknown`: the server may have accepted the email anyway (its range goes out again, flagged)."""
    _mark(logs, {"_id": log_id}, now, STATUS_FAILED, error, outcome_unknown=outcome_unknown)


def close_unknown_outcome(logs: Documents, log_id: object, run_id: str, now: datetime) -> None:
    """An entry left `sending` by a run that died, lost its lease or could not record the result."""
    error = f"delivery outcome unknown: the run stopped after handing this email to the SMTP server and before recording the result; run {run_id} re-delivers these messages and marks them possible_duplicate"
    _mark(logs, {"_id": log_id, "status": STATUS_SENDING}, now, STATUS_FAILED, error, outcome_unknown=True)


@dataclass(frozen=True)
class RecordedRange:
    """The messages of an entry: arrival keys [low, high), or message timestamps [start, end)."""

    kind: Literal["arrival", "timestamp"]
    low: Key
    high: Key


@dataclass(frozen=True)
class LedgerEntry:
    id: ObjectId
    workspace_id: str
    workspace_name: str
    status: str
    error_message: str | None
    trigger: str | None
    export_time: datetime | None  # the run's time: its subject and file name
    created_at: datetime | None
    updated_at: datetime | None
    email_sent_to: str  # as recorded: "a@x.test, b@y.test"
    message_count: int
    window_start: datetime | None
    window_end: datetime | None
    keys: tuple[Key, Key] | None
    part: int | None
    parts: int | None
    file_path: str | None
    file_name: str | None
    attachment_sha256: str | None
    attachment_bytes: int | None
    resend_of: ObjectId | None
    possible_duplicate: bool  # may repeat an earlier email (its outcome was unknown)

    @property
    def recipients(self) -> tuple[str, ...]:
        return split_address_list(self.email_sent_to)[0]

    @property
    def time(self) -> datetime | None:
        """When it was recorded (the original service's entries may have only their export's time)."""
        return self.created_at or self.export_time

    @property
    def sent_at(self) -> datetime | None:
        """When the email went out: a completed entry's last update is the server's acceptance."""
        return self.updated_at or self.created_at

    @property
    def recorded_range(self) -> RecordedRange | None:
        """What it held: its arrival keys, else its timestamp window; None for an entry without either."""
        if self.keys is not None:
            return RecordedRange("arrival", *self.keys)
        if self.window_start is not None and self.window_end is not None:
            return RecordedRange("timestamp", self.window_start, self.window_end)
        return None


def read_entry(document: Mapping[str, Any]) -> LedgerEntry:
    low, high = document.get("window_start_key"), document.get("window_end_key")
    # Both ends of one kind: MongoDB compares a range within one type only.
    keys = (low, high) if is_key(low) and is_key(high) and type(low) is type(high) else None
    named = {"id": document["_id"], "workspace_id": str(document.get("workspace_id") or ""), "keys": keys}
    named["export_time"] = as_utc_or_none(document.get("export_timestamp"))
    return LedgerEntry(**read_fields(LedgerEntry, document, **named))


def entry_by_id(logs: Documents, log_id: ObjectId) -> LedgerEntry | None:
    document = logs.find_one({"_id": log_id})
    return None if document is None else read_entry(document)


def entries_with_sha256(logs: Documents, sha256: str) -> list[LedgerEntry]:
    """The entries that recorded this attachment hash, oldest first (the original before any resend of it)."""
    found = logs.find({"attachment_sha256": sha256.lower()}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
    return [read_entry(document) for document in found.limit(MATCHES_SHOWN)]


def latest_entries(logs: Documents, query: Document, limit: int) -> list[LedgerEntry]:
    """The entries matching `query`, newest first (`logs`; `health` asks for the possible duplicates)."""
    found = logs.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
    return [read_entry(document) for document in found]


# The details of each kind of system_logs event are named where it is recorded (export/run.py and the commands).
ExportRunDetails = CleanupDetails = CursorMoveDetails = HealthCheckDetails = Document
EVENT_TYPES = {"cleanup": "cleanup", "cursor_move": "cursor_moved", "health_check": "health_check"}


def record_event(
    logs: Documents, message: str, now: datetime, details: Mapping[str, Any], *, kind: str, failed: bool = False
) -> None:
    """The original service's envelope (a run's event_type: error or success), then kind, host and details."""
    event_type = EVENT_TYPES.get(kind) or ("error" if failed else "success")
    envelope = {"event_type": event_type, "message": message, "timestamp": now, "service": SERVICE_NAME}
    logs.insert_one({**envelope, "kind": kind, "host": socket.gethostname(), **details})


record_export_run = partial(record_event, kind=EXPORT_RUN)
record_cleanup = partial(record_event, kind="cleanup")
record_cursor_move = partial(record_event, kind="cursor_move")
record_health_check = partial(record_event, kind="health_check")


def original_exports(store: Store, workspace_ids: Sequence[str], now: datetime) -> dict[str, datetime]:
    """Each workspace's latest completed export by the original service (no `run_id`) within the backfill hours."""
    hours = store.settings.export_backfill_max_hours
    latest: dict[str, datetime] = {}
    group_by = {"_id": "$workspace_id", "last": {"$max": "$export_timestamp"}}
    for chunk in in_chunks(workspace_ids if hours > 0 else []):
        match = {"workspace_id": {"$in": chunk}, "export_type": EXPORT_TYPE, "status": STATUS_COMPLETED}
        match |= {"run_id": {"$exists": False}, "export_timestamp": {"$gte": now - timedelta(hours=hours)}}
        for group in store.export_logs.aggregate([{"$match": match}, {"$group": group_by}]):
            if (moment := as_utc_or_none(group.get("last"))) is not None and isinstance(group.get("_id"), str):
                latest[group["_id"].lower()] = moment
    return latest
