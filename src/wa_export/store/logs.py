"""`export_logs` and `system_logs`: every write and the reads. The original service's fields come first, ours after.

A scheduled email's entry is inserted `sending` before SMTP and turned `completed` or `failed` after
(`outcome_unknown: true` when the server may have accepted it); one still `sending` after its run is closed
`failed` by the next run, which flags its re-delivery `possible_duplicate: true`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypedDict, get_args

from bson import ObjectId
from pymongo.collection import Collection

from wa_export.clock import as_utc_or_none
from wa_export.store.arrivals import Key
from wa_export.store.connection import SERVICE_NAME, Workspace
from wa_export.workbook.fingerprint import Fingerprint

EXPORT_TYPE = "whatsapp_messages"
ExportStatus = Literal["completed", "failed", "sending"]
EXPORT_STATUSES: tuple[ExportStatus, ...] = get_args(ExportStatus)
STATUS_SENDING: ExportStatus = "sending"
STATUS_COMPLETED: ExportStatus = "completed"
STATUS_FAILED: ExportStatus = "failed"

EXPORT_RUN = "export_run"  # the `kind` of a run's system_logs event
TRIGGER_RESEND = "resend"  # an entry of `wa-export resend`: `resend_of` names the entry it repeats

Logs = Collection[dict[str, Any]]


@dataclass(frozen=True)
class ExportEntry:
    """The facts of one export_logs entry."""

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
    logs: Logs,
    entry: ExportEntry,
    now: datetime,
    *,
    status: ExportStatus,
    error: str | None = None,
    possible_duplicate: bool = False,
    log_id: ObjectId | None = None,
) -> None:
    document: dict[str, Any] = {} if log_id is None else {"_id": log_id}
    document.update(
        workspace_id=entry.workspace.id,
        workspace_name=entry.workspace.name,
        export_type=EXPORT_TYPE,
        export_timestamp=entry.export_timestamp,
        message_count=entry.message_count,
        file_path=entry.file_path,
        email_sent_to=", ".join(entry.recipients),
        status=status,
        error_message=error,
        created_at=now,
        updated_at=now,
        window_start=entry.window_start,
        window_end=entry.window_end,
    )
    if entry.keys is not None:
        document.update(
            window_start_key=entry.keys[0], window_end_key=entry.keys[1], part=entry.part, parts=entry.parts
        )
    if entry.attachment is not None:
        attachment = entry.attachment
        document.update(
            file_name=attachment.file_name, attachment_sha256=attachment.sha256, attachment_bytes=attachment.size
        )
    document.update(
        trigger=entry.trigger,
        run_id=entry.run_id,
        by_status=dict(entry.by_status),
        anomalies=dict(entry.anomalies),
        possible_duplicate=possible_duplicate,
    )
    if entry.resend_of is not None:
        document["resend_of"] = entry.resend_of
    logs.insert_one(document)


def mark_completed(logs: Logs, log_id: object, now: datetime) -> None:
    logs.update_one({"_id": log_id}, {"$set": {"status": STATUS_COMPLETED, "error_message": None, "updated_at": now}})


def mark_failed(logs: Logs, log_id: object, error: str, now: datetime, *, outcome_unknown: bool) -> None:
    """`outcome_unknown`: the server may have accepted the email anyway (its range goes out again, flagged)."""
    changes = {"status": STATUS_FAILED, "error_message": error, "outcome_unknown": outcome_unknown, "updated_at": now}
    logs.update_one({"_id": log_id}, {"$set": changes})


def close_unknown_outcome(logs: Logs, log_id: object, run_id: str, now: datetime) -> None:
    """An entry left `sending` by a run that died, lost its lease or could not record the result."""
    error = (
        "delivery outcome unknown: the run stopped after handing this email to the SMTP server and before "
        f"recording the result; run {run_id} re-delivers these messages and marks them possible_duplicate"
    )
    logs.update_one(
        {"_id": log_id, "status": STATUS_SENDING},
        {"$set": {"status": STATUS_FAILED, "error_message": error, "outcome_unknown": True, "updated_at": now}},
    )


# --- system_logs: the seed's envelope (event_type, message, timestamp, service), then kind, host, details ---


class ExportRunDetails(TypedDict):
    trigger: str
    run_id: str
    started_at: datetime
    finished_at: datetime | None
    window_end: datetime | None  # scheduled runs only
    workspaces: int
    completed: int
    failed: int
    skipped: int
    no_messages: int
    message_count: int
    anomalies: dict[str, int]
    orphaned_messages: int
    problems: list[str]
    possible_duplicates: int
    moves_watermark: bool  # the run moves cursors, so health counts it (the stored field keeps its old name)
    all_workspaces: bool
    interrupted: bool


class CleanupDetails(TypedDict):
    export_dir: str
    days: int
    dry_run: bool
    files_deleted: int
    workbooks_deleted: int
    temp_files_deleted: int
    bytes_freed: int
    folders_removed: int
    errors: list[str]


class CursorMoveDetails(TypedDict):
    workspace_id: str
    direction: str
    requested_time: datetime
    old_cursor: object
    old_cursor_time: datetime | None
    old_cursor_source: str | None
    new_cursor: object
    new_cursor_time: datetime
    past_message_id: str | None


class HealthCheckDetails(TypedDict):
    status: str
    checks: list[dict[str, str]]


def _event(logs: Logs, kind: str, event_type: str, message: str, now: datetime, details: Mapping[str, Any]) -> None:
    logs.insert_one(
        {
            "event_type": event_type,
            "message": message,
            "timestamp": now,
            "service": SERVICE_NAME,
            "kind": kind,
            "host": socket.gethostname(),
            **details,
        }
    )


def record_export_run(logs: Logs, message: str, now: datetime, details: ExportRunDetails, *, failed: bool) -> None:
    _event(logs, EXPORT_RUN, "error" if failed else "success", message, now, details)


def record_cleanup(logs: Logs, message: str, now: datetime, details: CleanupDetails) -> None:
    _event(logs, "cleanup", "cleanup", message, now, details)


def record_cursor_move(logs: Logs, message: str, now: datetime, details: CursorMoveDetails) -> None:
    _event(logs, "cursor_move", "cursor_moved", message, now, details)


def record_health_check(logs: Logs, message: str, now: datetime, details: HealthCheckDetails) -> None:
    _event(logs, "health_check", "health_check", message, now, details)


IDS_PER_QUERY = 5_000


def original_service_exports(logs: Logs, workspace_ids: Sequence[str], since: datetime) -> dict[str, datetime]:
    """Per workspace, the `export_timestamp` of its latest completed export by the original service (entries
    without a `run_id`) since `since`: one aggregation per 5,000 workspaces."""
    latest: dict[str, datetime] = {}
    ids = list(workspace_ids)
    for offset in range(0, len(ids), IDS_PER_QUERY):
        match = {
            "workspace_id": {"$in": ids[offset : offset + IDS_PER_QUERY]},
            "export_type": EXPORT_TYPE,
            "status": STATUS_COMPLETED,
            "run_id": {"$exists": False},
            "export_timestamp": {"$gte": since},
        }
        group_by = {"_id": "$workspace_id", "last": {"$max": "$export_timestamp"}}
        for group in logs.aggregate([{"$match": match}, {"$group": group_by}]):
            moment = as_utc_or_none(group.get("last"))
            if moment is not None and isinstance(group.get("_id"), str):
                latest[group["_id"].lower()] = moment
    return latest


def recent_possible_duplicates(logs: Logs, since: datetime) -> list[dict[str, Any]]:
    """Entries marked possible_duplicate since `since`, newest first (for `health`)."""
    fields = {"workspace_id": 1, "workspace_name": 1, "created_at": 1, "message_count": 1}
    found = logs.find({"possible_duplicate": True, "created_at": {"$gte": since}}, fields)
    return list(found.sort("created_at", -1).limit(100))
