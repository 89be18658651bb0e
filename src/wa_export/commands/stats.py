"""`wa-export stats`: messages per day (in EXPORT_TIMEZONE) and status, and the exports made. MongoDB groups by the raw
direction and AI flag; the export's Status rule (export/rows.py) is applied here, so stats and workbooks agree."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pymongo import DESCENDING

from wa_export.clock import as_utc_or_none, utc_now
from wa_export.export.rows import STATUS_UNKNOWN, STATUSES, status_of
from wa_export.recipients import Recipients, recipients_for
from wa_export.settings import Settings
from wa_export.store.arrivals import in_chunks
from wa_export.store.connection import Store, Workspace, mongo_errors, open_store, parse_workspace_id
from wa_export.store.ownership import both_forms, chats_of_workspace
from wa_export.units import count_or_zero
from wa_export.workbook_password import workbook_password
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, Resolved, Schedule, resolve


@dataclass(frozen=True)
class Period:
    days: tuple[date, ...]  # in the export time zone
    start: datetime  # UTC, start of the first day in the zone
    end: datetime  # UTC, start of the day after the last one
    timezone_name: str


@dataclass
class DayCounts:
    day: date
    counts: Counter[str] = field(default_factory=lambda: Counter(dict.fromkeys(STATUSES, 0)))

    @property
    def total(self) -> int:
        return self.counts.total()


@dataclass
class ExportSummary:
    completed: int = 0
    failed: int = 0
    messages_exported: int = 0
    last_success: datetime | None = None  # newest completed export, also before the period
    last_failure: datetime | None = None  # within the period


@dataclass
class WorkspaceStats:
    workspace: Workspace
    per_day: list[DayCounts]
    exports: ExportSummary
    recipients: Recipients
    time_zone: Resolved[ZoneInfo]  # the workspace's own clock, and where each comes from
    schedule: Resolved[Schedule]
    password: Resolved[str]  # its workbook password (never shown): set means its workbooks are encrypted

    @property
    def encrypted(self) -> bool:
        return self.password.value is not None

    @property
    def address_configured(self) -> bool:  # it may still be refused: see recipients
        return self.recipients.source != "none"

    @property
    def totals(self) -> Counter[str]:
        totals: Counter[str] = Counter()  # update, unlike +, keeps the statuses counted 0
        for day in self.per_day:
            totals.update(day.counts)
        return totals

    @property
    def total(self) -> int:
        return self.totals.total()

    def as_dict(self) -> dict[str, Any]:
        workspace = self.workspace
        document: dict[str, Any] = {"workspace_id": workspace.id, "workspace_name": workspace.name}
        document |= {"status": workspace.status, "address_configured": self.address_configured}
        document |= {"recipients": self.recipients.as_dict(), "time_zone": self.time_zone.as_dict()}
        document |= {"schedule": self.schedule.as_dict(), "encrypted": self.encrypted}
        document |= {"workbook_password": self.password.as_dict(secret=True), "exports": asdict(self.exports)}
        document["messages"] = {**self.totals, "total": self.total}
        document["per_day"] = [{"date": day.day, **day.counts, "total": day.total} for day in self.per_day]
        return document


@dataclass
class StatsReport:
    period: Period
    generated_at: datetime
    workspaces: list[WorkspaceStats]
    single: bool  # one workspace asked for by id, or the overview of all active ones

    def as_dict(self) -> dict[str, Any]:
        period, workspaces = self.period, [stats.as_dict() for stats in self.workspaces]
        document: dict[str, Any] = {"days": len(period.days), "timezone": period.timezone_name}
        document |= {"first_day": period.days[0], "last_day": period.days[-1], "generated_at": self.generated_at}
        document |= {"period_start": period.start, "period_end": period.end}
        document["encrypted_workspaces"] = sum(stats.encrypted for stats in self.workspaces)
        return document | ({"workspace": workspaces[0]} if self.single else {"workspaces": workspaces})


def messages_per_day(store: Store, chat_ids: Sequence[object], period: Period) -> list[DayCounts]:
    per_day = {day.isoformat(): DayCounts(day) for day in period.days}
    day = {"$dateToString": {"format": "%Y-%m-%d", "date": "$timestamp", "timezone": period.timezone_name}}
    by = {"day": day, "direction": "$direction", "ai": {"$eq": ["$is_ai_generated", True]}}
    for chunk in in_chunks(chat_ids):
        match = {"chat_id": {"$in": chunk}, "timestamp": {"$gte": period.start, "$lt": period.end}}
        for group in store.messages.aggregate([{"$match": match}, {"$group": {"_id": by, "count": {"$sum": 1}}}]):
            key = group["_id"]
            if (counts := per_day.get(str(key.get("day")))) is not None:
                counts.counts[status_of(key.get("direction"), key.get("ai"))] += count_or_zero(group.get("count"))
    if any(STATUS_UNKNOWN in day.counts for day in per_day.values()):
        for counts in per_day.values():  # every day gets the same keys, so the JSON rows stay uniform
            counts.counts.setdefault(STATUS_UNKNOWN, 0)
    return list(per_day.values())


def export_summaries(store: Store, workspaces: Sequence[Workspace], period: Period) -> dict[str, ExportSummary]:
    summaries = {workspace.id: ExportSummary() for workspace in workspaces}
    keys = both_forms(workspace.object_id for workspace in workspaces)  # both forms writers store
    match = {"workspace_id": {"$in": keys}, "created_at": {"$gte": period.start, "$lt": period.end}}
    by = {"workspace_id": {"$toString": "$workspace_id"}, "status": "$status"}  # one group for both id forms
    group = {"_id": by, "count": {"$sum": 1}, "messages": {"$sum": "$message_count"}, "last": {"$max": "$created_at"}}
    for found in store.export_logs.aggregate([{"$match": match}, {"$group": group}]):
        summary, status = summaries[found["_id"]["workspace_id"]], found["_id"].get("status")
        count, last = count_or_zero(found["count"]), as_utc_or_none(found["last"])
        if status == "completed":
            summary.completed, summary.last_success = count, last
            summary.messages_exported = count_or_zero(found["messages"])
        elif status == "failed":
            summary.failed, summary.last_failure = count, last
    for workspace in workspaces:
        if (summary := summaries[workspace.id]).last_success is None:  # "when did it last work" matters most
            completed = {"workspace_id": {"$in": both_forms([workspace.object_id])}, "status": "completed"}
            newest = store.export_logs.find_one(completed, {"created_at": 1}, sort=[("created_at", DESCENDING)])
            summary.last_success = as_utc_or_none((newest or {}).get("created_at"))
    return summaries


def stats(settings: Settings, workspace_id: str | None, days: int) -> StatsReport:
    if workspace_id is not None:
        parse_workspace_id(workspace_id)  # a malformed id is a usage error even with MongoDB down
    with open_store(settings) as store, mongo_errors(settings):
        now, zone = utc_now(), settings.export_timezone
        today = now.astimezone(zone).date()
        dates = tuple(today - timedelta(days=offset) for offset in range(days - 1, -1, -1))
        start = datetime.combine(dates[0], time(0), tzinfo=zone).astimezone(UTC)
        end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=zone).astimezone(UTC)
        period = Period(dates, start, end, settings.timezone_name)
        workspaces = store.workspaces_by_id([workspace_id]) if workspace_id else store.active_workspaces()
        summaries = export_summaries(store, workspaces, period) if workspaces else {}
        results = []
        for workspace in workspaces:  # its messages: the chats it owns (ownership.py), in both id forms
            per_day = messages_per_day(store, chats_of_workspace(store.chats, workspace).message_chat_ids(), period)
            time_zone, schedule = resolve(TIME_ZONE, workspace, settings), resolve(SCHEDULE, workspace, settings)
            recipients, password = recipients_for(workspace, settings), workbook_password(workspace, settings)
            summary = summaries[workspace.id]
            results.append(WorkspaceStats(workspace, per_day, summary, recipients, time_zone, schedule, password))
        return StatsReport(period, now, results, single=workspace_id is not None)
