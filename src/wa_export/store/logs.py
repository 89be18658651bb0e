"""`export_logs` and `system_logs`: every write and the reads. The original service's fields come first, ours after.

A scheduled email's entry is `sending` before SMTP, then `completed` or `failed` (`outcome_unknown` if the server may
have it); one left `sending` is closed `failed` by the next run, which flags its re-delivery `possible_duplicate`.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from bson import ObjectId

from wa_export.clock import as_utc_or_none
from wa_export.store.arrivals import Key, in_chunks
from wa_export.store.connection import SERVICE_NAME, Document, Documents, Workspace
from wa_export.workbook.fingerprint import Fingerprint

EXPORT_TYPE = "whatsapp_messages"
ExportStatus = Literal["completed", "failed", "sending"]
EXPORT_STATUSES: tuple[ExportStatus, ...] = get_args(ExportStatus)
STATUS_SENDING: ExportStatus = "sending"
STATUS_COMPLETED: ExportStatus = "completed"
STATUS_FAILED: ExportStatus = "failed"

EXPORT_RUN = "export_run"  # the `kind` of a run's system_logs event
TRIGGER_RESEND = "resend"  # an entry of `wa-export resend`: `resend_of` names the entry it repeats

Logs = Documents


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
    logs: Logs,
    entry: ExportEntry,
    now: datetime,
    *,
    status: ExportStatus,
    error: str | None = None,
    possible_duplicate: bool = False,
    log_id: ObjectId | None = None,
) -> None:
    keys, file = entry.keys, entry.attachment
    logs.insert_one(
        {
            **({} if log_id is None else {"_id": log_id}),
            "workspace_id": entry.workspace.id,
            "workspace_name": entry.workspace.name,
            "export_type": EXPORT_TYPE,
            "export_timestamp": entry.export_timestamp,
            "message_count": entry.message_count,
            "file_path": entry.file_path,
            "email_sent_to": ", ".join(entry.recipients),
            "status": status,
            "error_message": error,
            "created_at": now,
            "updated_at": now,
            "window_start": entry.window_start,
            "window_end": entry.window_end,
            **({} if keys is None else {"window_start_key": keys[0], "window_end_key": keys[1]}),
            **({} if keys is None else {"part": entry.part, "parts": entry.parts}),
            **({} if file is None else {"file_name": file.file_name, "attachment_sha256": file.sha256}),
            **({} if file is None else {"attachment_bytes": file.size}),
            "trigger": entry.trigger,
            "run_id": entry.run_id,
            "by_status": dict(entry.by_status),
            "anomalies": dict(entry.anomalies),
            "possible_duplicate": possible_duplicate,
            **({} if entry.resend_of is None else {"resend_of": entry.resend_of}),
        }
    )


def _mark(logs: Logs, query: Document, now: datetime, status: ExportStatus, error: str | None, **more: Any) -> None:
    logs.update_one(query, {"$set": {"status": status, "error_message": error, **more, "updated_at": now}})


def mark_completed(logs: Logs, log_id: object, now: datetime) -> None:
    _mark(logs, {"_id": log_id}, now, STATUS_COMPLETED, None)


def mark_failed(logs: Logs, log_id: object, error: str, now: datetime, *, outcome_unknown: bool) -> None:
    """`outcome_unknown`: the server may have accepted the email anyway (its range goes out again, flagged)."""
    _mark(logs, {"_id": log_id}, now, STATUS_FAILED, error, outcome_unknown=outcome_unknown)


def close_unknown_outcome(logs: Logs, log_id: object, run_id: str, now: datetime) -> None:
    """An entry left `sending` by a run that died, lost its lease or could not record the result."""
    error = (
        "delivery outcome unknown: the run stopped after handing this email to the SMTP server and before "
        f"recording the result; run {run_id} re-delivers these messages and marks them possible_duplicate"
    )
    _mark(logs, {"_id": log_id, "status": STATUS_SENDING}, now, STATUS_FAILED, error, outcome_unknown=True)


# --- system_logs: the seed's envelope (event_type, message, timestamp, service), then kind, host, details ---
# The details of each kind of event are named where it is recorded (export/run.py and the commands).
ExportRunDetails = Document
CleanupDetails = Document
CursorMoveDetails = Document
HealthCheckDetails = Document


def _event(logs: Logs, kind: str, event_type: str, message: str, now: datetime, details: Mapping[str, Any]) -> None:
    envelope = {"event_type": event_type, "message": message, "timestamp": now, "service": SERVICE_NAME}
    logs.insert_one({**envelope, "kind": kind, "host": socket.gethostname(), **details})


def record_export_run(logs: Logs, message: str, now: datetime, details: ExportRunDetails, *, failed: bool) -> None:
    _event(logs, EXPORT_RUN, "error" if failed else "success", message, now, details)


def record_cleanup(logs: Logs, message: str, now: datetime, details: CleanupDetails) -> None:
    _event(logs, "cleanup", "cleanup", message, now, details)


def record_cursor_move(logs: Logs, message: str, now: datetime, details: CursorMoveDetails) -> None:
    _event(logs, "cursor_move", "cursor_moved", message, now, details)


def record_health_check(logs: Logs, message: str, now: datetime, details: HealthCheckDetails) -> None:
    _event(logs, "health_check", "health_check", message, now, details)


def original_service_exports(logs: Logs, workspace_ids: Sequence[str], since: datetime) -> dict[str, datetime]:
    """Per workspace, the `export_timestamp` of its latest completed export by the original service (entries
    without a `run_id`) since `since`: one aggregation per CHAT_IDS_PER_QUERY workspaces."""
    latest: dict[str, datetime] = {}
    group_by = {"_id": "$workspace_id", "last": {"$max": "$export_timestamp"}}
    for chunk in in_chunks(workspace_ids):
        match = {"workspace_id": {"$in": chunk}, "export_type": EXPORT_TYPE, "status": STATUS_COMPLETED}
        match |= {"run_id": {"$exists": False}, "export_timestamp": {"$gte": since}}
        for group in logs.aggregate([{"$match": match}, {"$group": group_by}]):
            if (moment := as_utc_or_none(group.get("last"))) is not None and isinstance(group.get("_id"), str):
                latest[group["_id"].lower()] = moment
    return latest


def recent_possible_duplicates(logs: Logs, since: datetime) -> list[Document]:
    """Entries marked possible_duplicate since `since`, newest first (for `health`)."""
    fields = {"workspace_id": 1, "workspace_name": 1, "created_at": 1, "message_count": 1}
    found = logs.find({"possible_duplicate": True, "created_at": {"$gte": since}}, fields)
    return list(found.sort("created_at", -1).limit(100))
