"""`wa-export logs`: recent exports from export_logs, or this tool's events from system_logs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from pymongo import DESCENDING

from wa_export.clock import as_utc_or_none
from wa_export.errors import UsageProblem
from wa_export.settings import Settings
from wa_export.store.connection import SERVICE_NAME, mongo_errors, open_store, parse_workspace_id
from wa_export.store.logs import EXPORT_STATUSES
from wa_export.store.ownership import as_object_id, both_forms
from wa_export.units import count_or_zero


@dataclass(frozen=True)
class ExportLogEntry:
    id: str  # the entry's `_id`, as `resend` takes it
    time: datetime | None
    workspace_id: str
    workspace_name: str
    trigger: str | None
    window_start: datetime | None
    window_end: datetime | None
    message_count: int
    file_path: str | None
    recipients: str
    status: str
    error: str | None
    possible_duplicate: bool = False  # may repeat an earlier email (its outcome was unknown)


@dataclass(frozen=True)
class SystemLogEntry:
    time: datetime | None
    event_type: str  # the original service's field: "success"/"error" for a run
    message: str
    kind: str = ""  # what happened: export_run, cleanup, cursor_move, health_check


@dataclass
class LogsReport:
    kind: Literal["export", "system"]
    limit: int
    status: str | None
    workspace_id: str | None
    export_entries: list[ExportLogEntry] = field(default_factory=list)
    system_entries: list[SystemLogEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        entries = self.export_entries if self.kind == "export" else self.system_entries
        fields = {"kind": self.kind, "limit": self.limit, "status": self.status, "workspace_id": self.workspace_id}
        return {**fields, "count": len(entries), "entries": [asdict(entry) for entry in entries]}


def _text(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    return None if value is None else str(value)


def logs(settings: Settings, workspace_id: str | None, limit: int, status: str | None, system: bool) -> LogsReport:
    """Newest first. A well-formed id of a deleted workspace still shows its history."""
    if status is not None:
        status = status.strip().lower()
        if status not in EXPORT_STATUSES:
            raise UsageProblem(f"--status must be one of {', '.join(EXPORT_STATUSES)}, got {status!r}.")
    if system and (status is not None or workspace_id is not None):
        raise UsageProblem("--system shows the tool's own events: it takes neither --status nor a WORKSPACE_ID.")
    query: dict[str, Any] = {} if status is None else {"status": status}
    if workspace_id is not None:
        query["workspace_id"] = {"$in": both_forms([parse_workspace_id(workspace_id)])}
    with open_store(settings) as store, mongo_errors(settings):
        # Logs prove nothing: an earlier version wrote its events into a misspelt database too.
        store.require_workspaces_collection()
        report = LogsReport("system" if system else "export", limit, status, workspace_id)
        if system:  # this tool's events (service SERVICE_NAME)
            projection = {"event_type": 1, "message": 1, "timestamp": 1, "kind": 1}
            found = store.system_logs.find({"service": SERVICE_NAME}, projection)
            for document in found.sort([("timestamp", DESCENDING), ("_id", DESCENDING)]).limit(limit):
                texts = (_text(document, name) or "" for name in ("event_type", "message", "kind"))
                report.system_entries.append(SystemLogEntry(as_utc_or_none(document.get("timestamp")), *texts))
            return report
        found = store.export_logs.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)])
        documents = list(found.limit(limit))
        if workspace_id is not None and not documents:
            store.workspaces_by_id([workspace_id])  # raises UnknownWorkspace for a wrong id
        # The name of each entry's workspace where the entry does not record one.
        object_ids = {oid for document in documents if (oid := as_object_id(document.get("workspace_id"))) is not None}
        named = list(store.workspaces.find({"_id": {"$in": list(object_ids)}}, {"name": 1})) if object_ids else []
        names = {str(workspace["_id"]): _text(workspace, "name") or "" for workspace in named}
        report.export_entries = [_export_entry(document, names) for document in documents]
        return report


def _export_entry(document: Mapping[str, Any], names: Mapping[str, str]) -> ExportLogEntry:
    ident, name, time = (
        str(document.get("workspace_id", "")),
        document.get("workspace_name"),
        document.get("created_at"),
    )
    return ExportLogEntry(
        id=str(document.get("_id")),
        time=as_utc_or_none(time) or as_utc_or_none(document.get("export_timestamp")),
        workspace_id=ident,
        workspace_name=name if isinstance(name, str) else names.get(ident, ""),
        trigger=_text(document, "trigger"),
        window_start=as_utc_or_none(document.get("window_start")),
        window_end=as_utc_or_none(document.get("window_end")),
        message_count=count_or_zero(document.get("message_count")),
        file_path=_text(document, "file_path"),
        recipients=_text(document, "email_sent_to") or "",
        status=_text(document, "status") or "",
        error=_text(document, "error_message"),
        possible_duplicate=document.get("possible_duplicate") is True,
    )
