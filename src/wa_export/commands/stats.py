"""Read-only reports for operators: `stats` (messages per day and status, exports) and `logs`.

Message counts are computed by aggregation in MongoDB, bounded by the period
*and* the workspace's chats (``chat_id $in``, ``timestamp`` range), never by a
scan over all messages. Days are calendar days in EXPORT_TIMEZONE
(``$dateToString`` with ``timezone``). MongoDB groups by the raw direction and
AI flag; the SPEC §2 status mapping is then applied here with the same rules
as the export (rows.py), so stats and workbooks never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal

from bson import ObjectId
from pymongo import DESCENDING

from wa_export.errors import UnknownWorkspace
from wa_export.export.rows import (
    STATUS_RECEIVED,
    STATUS_SENT_BY_HUMAN,
    STATUS_SENT_VIA_AI,
    STATUS_UNKNOWN,
    STATUSES,
    _direction,
)
from wa_export.settings import Settings
from wa_export.store.connection import (
    CHAT_IDS_PER_QUERY,
    SERVICE_NAME,
    Store,
    Workspace,
    parse_workspace_id,
)

ExportStatus = Literal["completed", "failed"]
EXPORT_STATUSES: tuple[ExportStatus, ...] = ("completed", "failed")


def _as_utc(moment: object) -> datetime | None:
    if not isinstance(moment, datetime):
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _workspace_keys(workspace: Workspace) -> list[object]:
    # Platform writers (and old export_logs) stored workspace ids as ObjectId or as string.
    return [workspace.object_id, workspace.id]


# ----------------------------------------------------------------------------- stats


@dataclass(frozen=True)
class Period:
    """Calendar days [first, last] in the export time zone, and the UTC range they cover."""

    days: tuple[date, ...]
    start: datetime  # UTC, start of the first day in the zone
    end: datetime  # UTC, start of the day after the last one
    timezone_name: str


def period_for(settings: Settings, days: int, now: datetime) -> Period:
    zone = settings.export_timezone
    today = now.astimezone(zone).date()
    dates = tuple(today - timedelta(days=offset) for offset in range(days - 1, -1, -1))
    start = datetime.combine(dates[0], time(0), tzinfo=zone).astimezone(timezone.utc)
    end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone).astimezone(timezone.utc)
    return Period(dates, start, end, settings.timezone_name)


@dataclass
class DayCounts:
    day: date
    counts: dict[str, int] = field(default_factory=lambda: {status: 0 for status in STATUSES})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        return {"date": self.day.isoformat(), **self.counts, "total": self.total}


@dataclass
class ExportSummary:
    completed: int = 0
    failed: int = 0
    messages_exported: int = 0
    last_success: datetime | None = None  # newest completed export, also before the period
    last_failure: datetime | None = None  # within the period

    def as_dict(self) -> dict[str, Any]:
        return {
            "completed": self.completed,
            "failed": self.failed,
            "messages_exported": self.messages_exported,
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
        }


@dataclass
class WorkspaceStats:
    workspace: Workspace
    per_day: list[DayCounts]
    exports: ExportSummary
    address_configured: bool

    @property
    def totals(self) -> dict[str, int]:
        totals: dict[str, int] = {status: 0 for status in STATUSES}
        for day in self.per_day:
            for status, count in day.counts.items():
                totals[status] = totals.get(status, 0) + count
        return totals

    @property
    def total(self) -> int:
        return sum(self.totals.values())

    def as_dict(self, with_days: bool = True) -> dict[str, Any]:
        document: dict[str, Any] = {
            "workspace_id": self.workspace.id,
            "workspace_name": self.workspace.name,
            "status": self.workspace.status,
            "address_configured": self.address_configured,
            "messages": {**self.totals, "total": self.total},
            "exports": self.exports.as_dict(),
        }
        if with_days:
            document["per_day"] = [day.as_dict() for day in self.per_day]
        return document


@dataclass
class StatsReport:
    period: Period
    generated_at: datetime
    workspaces: list[WorkspaceStats]
    single: bool  # one workspace asked for by id, or the overview of all active ones

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "days": len(self.period.days),
            "timezone": self.period.timezone_name,
            "first_day": self.period.days[0].isoformat(),
            "last_day": self.period.days[-1].isoformat(),
            "period_start": _iso(self.period.start),
            "period_end": _iso(self.period.end),
            "generated_at": _iso(self.generated_at),
        }
        if self.single:
            document["workspace"] = self.workspaces[0].as_dict()
        else:
            document["workspaces"] = [stats.as_dict() for stats in self.workspaces]
        return document


def status_of(direction: object, is_ai_generated: object) -> str:
    """SPEC §2, the same rules as rows.message_rows."""
    normalized = _direction(direction)
    if normalized == "incoming":
        return STATUS_RECEIVED
    if normalized == "outgoing":
        return STATUS_SENT_VIA_AI if is_ai_generated is True else STATUS_SENT_BY_HUMAN
    return STATUS_UNKNOWN


def chat_ids_of(store: Store, workspace: Workspace) -> list[ObjectId]:
    query = {"workspace_id": {"$in": _workspace_keys(workspace)}}
    return [document["_id"] for document in store.chats.find(query, {"_id": 1})]


def messages_per_day(store: Store, chat_ids: Sequence[object], period: Period) -> list[DayCounts]:
    per_day = {day: DayCounts(day) for day in period.days}
    by_iso = {day.isoformat(): counts for day, counts in per_day.items()}
    for offset in range(0, len(chat_ids), CHAT_IDS_PER_QUERY):
        pipeline: list[dict[str, Any]] = [
            {
                "$match": {
                    "chat_id": {"$in": list(chat_ids[offset : offset + CHAT_IDS_PER_QUERY])},
                    "timestamp": {"$gte": period.start, "$lt": period.end},
                }
            },
            {
                "$group": {
                    "_id": {
                        "day": {
                            "$dateToString": {
                                "format": "%Y-%m-%d",
                                "date": "$timestamp",
                                "timezone": period.timezone_name,
                            }
                        },
                        "direction": "$direction",
                        "ai": {"$eq": ["$is_ai_generated", True]},
                    },
                    "count": {"$sum": 1},
                }
            },
        ]
        for group in store.messages.aggregate(pipeline):
            key = group["_id"]
            counts = by_iso.get(str(key.get("day")))
            if counts is None:
                continue
            status = status_of(key.get("direction"), key.get("ai"))
            counts.counts[status] = counts.counts.get(status, 0) + _int(group.get("count"))
    if any(STATUS_UNKNOWN in day.counts for day in per_day.values()):
        # Every day gets the same keys, so the JSON rows stay uniform.
        for day in per_day.values():
            day.counts.setdefault(STATUS_UNKNOWN, 0)
    return [per_day[day] for day in period.days]


def export_summaries(store: Store, workspaces: Sequence[Workspace], period: Period) -> dict[str, ExportSummary]:
    """Completed/failed exports and messages exported in the period, plus each one's last success."""
    summaries = {workspace.id: ExportSummary() for workspace in workspaces}
    keys = [key for workspace in workspaces for key in _workspace_keys(workspace)]
    pipeline: list[dict[str, Any]] = [
        {"$match": {"workspace_id": {"$in": keys}, "created_at": {"$gte": period.start, "$lt": period.end}}},
        {
            "$group": {
                "_id": {"workspace_id": "$workspace_id", "status": "$status"},
                "count": {"$sum": 1},
                "messages": {"$sum": "$message_count"},
                "last": {"$max": "$created_at"},
            }
        },
    ]
    for group in store.export_logs.aggregate(pipeline):
        summary = summaries.get(str(group["_id"].get("workspace_id")))
        if summary is None:
            continue
        status = group["_id"].get("status")
        last = _as_utc(group.get("last"))
        if status == "completed":
            summary.completed += _int(group.get("count"))
            summary.messages_exported += _int(group.get("messages"))
            if last is not None and (summary.last_success is None or last > summary.last_success):
                summary.last_success = last
        elif status == "failed":
            summary.failed += _int(group.get("count"))
            if last is not None and (summary.last_failure is None or last > summary.last_failure):
                summary.last_failure = last
    for workspace in workspaces:
        summary = summaries[workspace.id]
        if summary.last_success is None:
            # Nothing in the period: "when did it last work" still matters most.
            newest = store.export_logs.find_one(
                {"workspace_id": {"$in": _workspace_keys(workspace)}, "status": "completed"},
                {"created_at": 1},
                sort=[("created_at", DESCENDING)],
            )
            summary.last_success = _as_utc((newest or {}).get("created_at"))
    return summaries


def stats_report(store: Store, settings: Settings, workspace_id: str | None, days: int, now: datetime) -> StatsReport:
    """One workspace by id (any status), or every active workspace."""
    period = period_for(settings, days, now)
    workspaces = store.workspaces_by_id([workspace_id]) if workspace_id else store.active_workspaces()
    summaries = export_summaries(store, workspaces, period) if workspaces else {}
    results = [
        WorkspaceStats(
            workspace=workspace,
            per_day=messages_per_day(store, chat_ids_of(store, workspace), period),
            exports=summaries[workspace.id],
            address_configured=bool(settings.recipients_for(workspace.id)),
        )
        for workspace in workspaces
    ]
    return StatsReport(period=period, generated_at=now, workspaces=results, single=workspace_id is not None)


# ----------------------------------------------------------------------------- logs


@dataclass(frozen=True)
class ExportLogEntry:
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

    def as_dict(self) -> dict[str, Any]:
        return {
            "time": _iso(self.time),
            "workspace_id": self.workspace_id,
            "workspace_name": self.workspace_name,
            "trigger": self.trigger,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "message_count": self.message_count,
            "file_path": self.file_path,
            "recipients": self.recipients,
            "status": self.status,
            "error": self.error,
        }


@dataclass(frozen=True)
class SystemLogEntry:
    time: datetime | None
    event_type: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": _iso(self.time), "event_type": self.event_type, "message": self.message}


@dataclass
class LogsReport:
    kind: Literal["export", "system"]
    limit: int
    status: str | None
    workspace_id: str | None
    export_entries: list[ExportLogEntry] = field(default_factory=list)
    system_entries: list[SystemLogEntry] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.export_entries) + len(self.system_entries)

    def as_dict(self) -> dict[str, Any]:
        entries = self.export_entries if self.kind == "export" else self.system_entries
        return {
            "kind": self.kind,
            "limit": self.limit,
            "status": self.status,
            "workspace_id": self.workspace_id,
            "count": self.count,
            "entries": [entry.as_dict() for entry in entries],
        }


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def export_log_entries(
    store: Store, workspace_id: str | None, status: str | None, limit: int
) -> LogsReport:
    """Newest first. A well-formed id of a deleted workspace still shows its history."""
    report = LogsReport("export", limit, status, workspace_id)
    query: dict[str, Any] = {}
    if workspace_id is not None:
        object_id = parse_workspace_id(workspace_id)
        query["workspace_id"] = {"$in": [str(object_id), object_id]}
    if status is not None:
        query["status"] = status
    documents = list(
        store.export_logs.find(query).sort([("created_at", DESCENDING), ("_id", DESCENDING)]).limit(limit)
    )
    if workspace_id is not None and not documents:
        store.workspaces_by_id([workspace_id])  # raises UnknownWorkspace for a wrong id
    names = _workspace_names(store, (document.get("workspace_id") for document in documents))
    for document in documents:
        ident = str(document.get("workspace_id", ""))
        name = document.get("workspace_name")
        report.export_entries.append(
            ExportLogEntry(
                time=_as_utc(document.get("created_at")) or _as_utc(document.get("export_timestamp")),
                workspace_id=ident,
                workspace_name=name if isinstance(name, str) else names.get(ident, ""),
                trigger=_text(document.get("trigger")),
                window_start=_as_utc(document.get("window_start")),
                window_end=_as_utc(document.get("window_end")),
                message_count=_int(document.get("message_count")),
                file_path=_text(document.get("file_path")),
                recipients=_text(document.get("email_sent_to")) or "",
                status=_text(document.get("status")) or "",
                error=_text(document.get("error_message")),
            )
        )
    return report


def _workspace_names(store: Store, raw_ids: Iterable[object]) -> dict[str, str]:
    object_ids: set[ObjectId] = set()
    for raw in raw_ids:
        try:
            object_ids.add(raw if isinstance(raw, ObjectId) else ObjectId(str(raw)))
        except Exception:
            continue
    if not object_ids:
        return {}
    return {
        str(document["_id"]): _text(document.get("name")) or ""
        for document in store.workspaces.find({"_id": {"$in": list(object_ids)}}, {"name": 1})
    }


def system_log_entries(store: Store, limit: int) -> LogsReport:
    """This tool's events (service SERVICE_NAME), newest first."""
    report = LogsReport("system", limit, None, None)
    cursor = (
        store.system_logs.find({"service": SERVICE_NAME}, {"event_type": 1, "message": 1, "timestamp": 1})
        .sort([("timestamp", DESCENDING), ("_id", DESCENDING)])
        .limit(limit)
    )
    for document in cursor:
        report.system_entries.append(
            SystemLogEntry(
                time=_as_utc(document.get("timestamp")),
                event_type=_text(document.get("event_type")) or "",
                message=_text(document.get("message")) or "",
            )
        )
    return report


__all__ = [
    "EXPORT_STATUSES",
    "LogsReport",
    "StatsReport",
    "UnknownWorkspace",
    "export_log_entries",
    "period_for",
    "stats_report",
    "system_log_entries",
]
