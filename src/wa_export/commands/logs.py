"""`wa-export logs`: recent exports from export_logs, or this tool's events from system_logs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from pymongo import DESCENDING

from wa_export.clock import as_utc_or_none
from wa_export.errors import UsageProblem
from wa_export.settings import Settings
from wa_export.store.connection import SERVICE_NAME, mongo_errors, open_store, parse_workspace_id
from wa_export.store.logs import EXPORT_STATUSES, LedgerEntry, latest_entries
from wa_export.store.ownership import as_object_id, both_forms

# What `logs --json` says of an export, in order; two are named after their export_logs field in the entry.
EXPORT_FACTS = ["id", "time", "workspace_id", "workspace_name", "trigger", "window_start", "window_end"]
EXPORT_FACTS += ["message_count", "file_path", "recipients", "status", "error", "possible_duplicate"]
STORED_AS = {"recipients": "email_sent_to", "error": "error_message"}


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
    export_entries: list[LedgerEntry] = field(default_factory=list)
    system_entries: list[SystemLogEntry] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        fields = {"kind": self.kind, "limit": self.limit, "status": self.status, "workspace_id": self.workspace_id}
        if self.kind == "system":
            entries = [asdict(entry) for entry in self.system_entries]
        else:
            entries = [export_facts(entry) for entry in self.export_entries]
        return {**fields, "count": len(entries), "entries": entries}


def export_facts(entry: LedgerEntry) -> dict[str, Any]:
    return {name: getattr(entry, STORED_AS.get(name, name)) for name in EXPORT_FACTS} | {"id": str(entry.id)}


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
        entries = latest_entries(store.export_logs, query, limit)
        if workspace_id is not None and not entries:
            store.workspaces_by_id([workspace_id])  # raises UnknownWorkspace for a wrong id
        # The name of each entry's workspace where the entry does not record one.
        unnamed = {oid for e in entries if not e.workspace_name and (oid := as_object_id(e.workspace_id)) is not None}
        named = list(store.workspaces.find({"_id": {"$in": list(unnamed)}}, {"name": 1})) if unnamed else []
        names = {str(workspace["_id"]): _text(workspace, "name") or "" for workspace in named}
        report.export_entries = [
            replace(e, workspace_name=e.workspace_name or names.get(e.workspace_id, "")) for e in entries
        ]
        return report
