"""`wa-export logs`: recent exports from export_logs, or this tool's events from system_logs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from pymongo import DESCENDING

from wa_export.clock import as_utc_or_none
from wa_export.errors import UsageProblem
from wa_export.settings import Settings
from wa_export.store.arrivals import key_text
from wa_export.store.connection import SERVICE_NAME, mongo_errors, open_store, parse_workspace_id
from wa_export.store.logs import EXPORT_STATUSES, LedgerEntry, latest_entries
from wa_export.store.ownership import as_object_id, both_forms


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
        if self.kind == "system":
            entries = [asdict(entry) for entry in self.system_entries]
        else:  # as export_logs has them: recipients and error as recorded
            found = self.export_entries
            entries = [entry_facts(e) | {"recipients": e.email_sent_to, "error": e.error_message} for e in found]
        asked = {"kind": self.kind, "limit": self.limit, "status": self.status, "workspace_id": self.workspace_id}
        return {**asked, "count": len(entries), "entries": entries}


def entry_facts(entry: LedgerEntry) -> dict[str, Any]:
    """An export_logs entry for --json: its fields, its recipients as a list, when it was sent and what it held."""
    held = entry.recorded_range
    span = None if held is None else {"kind": held.kind, "start": key_text(held.low), "end": key_text(held.high)}
    derived = {"id": str(entry.id), "recipients": list(entry.recipients), "time": entry.time, "sent_at": entry.sent_at}
    return asdict(entry) | derived | {"range": span}


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
            found = store.system_logs.find({"service": SERVICE_NAME}, ["event_type", "message", "timestamp", "kind"])
            for document in found.sort([("timestamp", DESCENDING), ("_id", DESCENDING)]).limit(limit):
                texts = (str(document.get(name) or "") for name in ("event_type", "message", "kind"))
                report.system_entries.append(SystemLogEntry(as_utc_or_none(document.get("timestamp")), *texts))
            return report
        entries = latest_entries(store.export_logs, query, limit)
        if workspace_id is not None and not entries:
            store.workspaces_by_id([workspace_id])  # raises UnknownWorkspace for a wrong id
        # The name of each entry's workspace where the entry does not record one.
        unnamed = {oid for e in entries if not e.workspace_name and (oid := as_object_id(e.workspace_id)) is not None}
        named = list(store.workspaces.find({"_id": {"$in": list(unnamed)}}, ["name"])) if unnamed else []
        names = {str(workspace["_id"]): str(workspace.get("name") or "") for workspace in named}
        report.export_entries = [
            replace(e, workspace_name=e.workspace_name or names.get(e.workspace_id, "")) for e in entries
        ]
        return report
