"""`wa-export logs`: recent exports from export_logs, or this tool's events from system_logs; `wa-export verify FILE`:
which recorded export a file is, by the SHA-256 of its bytes (one byte changed is another hash: no entry, exit 1)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pymongo import DESCENDING

from wa_export.clock import as_utc_or_none
from wa_export.errors import ExitCode, UsageProblem
from wa_export.settings import Settings
from wa_export.store.arrivals import key_text
from wa_export.store.connection import SERVICE_NAME, mongo_errors, open_store, parse_workspace_id
from wa_export.store.logs import EXPORT_STATUSES, LedgerEntry, entries_with_sha256, latest_entries
from wa_export.store.ownership import as_object_id, both_forms
from wa_export.workbook.fingerprint import Fingerprint, fingerprint

NOT_RECORDED = "No export of this file is recorded: no export_logs entry has its SHA-256, so it is not a workbook wa-export emailed from this database, or it was changed after it was sent."


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


class UnreadableFile(UsageProblem):
    """The file to verify is missing, not a file, or unreadable (exit 2)."""


@dataclass
class VerifyReport:
    path: Path
    file: Fingerprint
    entries: list[LedgerEntry]

    @property
    def found(self) -> bool:
        return bool(self.entries)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.found else ExitCode.FAILED

    def as_dict(self) -> dict[str, Any]:
        file = {"file": str(self.path), "sha256": self.file.sha256, "bytes": self.file.size, "found": self.found}
        document = {"exit_code": self.exit_code, **file, "entries": [entry_facts(entry) for entry in self.entries]}
        return document if self.found else {**document, "error": NOT_RECORDED}


def read_fingerprint(raw_path: str | Path) -> tuple[Path, Fingerprint]:
    """The file's path and fingerprint; UnreadableFile (exit 2) with one sentence when it cannot be read."""
    path = Path(raw_path).expanduser()
    try:
        return path, fingerprint(path)
    except FileNotFoundError:
        raise UnreadableFile(f"{path} does not exist; give the path of the file to verify.") from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise UnreadableFile(f"Cannot read {path} ({reason}); give the path of a readable file.") from None


def verify(settings: Settings, raw_path: str | Path) -> VerifyReport:
    path, file = read_fingerprint(raw_path)
    with open_store(settings) as store, mongo_errors(settings):
        store.require_workspaces_collection()  # the ledger of another database proves nothing
        return VerifyReport(path, file, entries_with_sha256(store.export_logs, file.sha256))
