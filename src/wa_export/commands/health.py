"""`wa-export health`: is the export working, and if not, what to do (issue 3).

One `Check` per question an operator asks at 3 a.m., each `ok`, `warning` or
`failed` with a one-sentence reason (`skipped` when it needs MongoDB and MongoDB
is down). Any failed check makes the exit code 1 -- including an unreachable
MongoDB, so a monitor needs one rule for `health`. The report is recorded as a
`health_check` event in `system_logs` when MongoDB is reachable.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pymongo.errors import PyMongoError

from wa_export.addresses import outside_allowed_domains
from wa_export.clock import utc_now
from wa_export.errors import ExitCode, MongoUnavailable
from wa_export.mail.transport import MailError, MailSender, check_sendable, tls_mode
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store.arrivals import ArrivalKey, arrival_key_problem
from wa_export.store.connection import SERVICE_NAME, Store, describe_mongo_error
from wa_export.store.export_logs import recent_possible_duplicates
from wa_export.store.export_state import count_cursors_ahead
from wa_export.units import format_bytes

CheckStatus = Literal["ok", "warning", "failed", "skipped"]

# Free space below either threshold is a warning: a full disk fails every export.
MIN_FREE_BYTES = 1024**3
MIN_FREE_FRACTION = 0.05
FAILED_EXPORTS_LOOKBACK = timedelta(hours=24)
NAMES_SHOWN = 10  # longer lists are cut in the reason; `details` (and --json) has them all


@dataclass
class Check:
    name: str
    status: CheckStatus
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason, "details": self.details}


@dataclass
class HealthReport:
    checked_at: datetime
    checks: list[Check] = field(default_factory=list)
    recorded: bool = False  # the health_check event was written to system_logs

    def count(self, status: CheckStatus) -> int:
        return sum(1 for check in self.checks if check.status == status)

    @property
    def status(self) -> CheckStatus:
        for worst in ("failed", "warning"):
            if self.count(worst) > 0:  # type: ignore[arg-type]
                return worst  # type: ignore[return-value]
        return "ok"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.count("failed") else ExitCode.OK

    def summary(self) -> str:
        parts = [f"{self.count('ok')} ok", f"{self.count('warning')} warning", f"{self.count('failed')} failed"]
        if self.count("skipped"):
            parts.append(f"{self.count('skipped')} skipped")
        return f"health {self.status}: " + ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.exit_code == 0,
            "status": self.status,
            "exit_code": self.exit_code,
            "checked_at": self.checked_at.isoformat(),
            "summary": self.summary(),
            "recorded": self.recorded,
            "checks": [check.as_dict() for check in self.checks],
        }


# --------------------------------------------------------------------------- helpers


def _local(moment: datetime, settings: Settings) -> str:
    return f"{moment.astimezone(settings.export_timezone):%Y-%m-%d %H:%M} {settings.timezone_name}"


def _ago(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    if minutes < 1:
        return "less than a minute ago"
    if minutes < 120:
        return f"{minutes} min ago"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min ago"
    return f"{hours // 24} days ago"


def _named(items: list[str]) -> str:
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


def index_command(collection: str, keys: list[tuple[str, int]]) -> str:
    """The mongosh command that creates a supporting index, e.g. db.chats.createIndex({ workspace_id: 1 })."""
    fields = ", ".join(f"{name}: {order}" for name, order in keys)
    return f"db.{collection}.createIndex({{ {fields} }})"


# --------------------------------------------------------------------------- checks without MongoDB


def check_smtp_settings(settings: Settings) -> Check:
    try:
        check_sendable(settings)
    except MailError as error:
        return Check("smtp_settings", "failed", str(error))
    mode = tls_mode(settings)
    login = f"login as {settings.smtp_username}" if settings.smtp_username else "no login"
    where = f"{settings.smtp_server}:{settings.smtp_port}, {mode}, {login}, from {settings.smtp_from}"
    details = {"server": settings.smtp_server, "port": settings.smtp_port, "security": mode}
    if mode == "none":
        return Check("smtp_settings", "warning",
                     f"SMTP settings complete ({where}) but SMTP_SECURITY=none sends passwords and exports unencrypted.",
                     details)
    return Check("smtp_settings", "ok", f"SMTP settings complete ({where}).", details)


def check_smtp_login(settings: Settings, settings_check: Check) -> Check:
    if settings_check.status == "failed":
        return Check("smtp_login", "failed", "Not tried: the SMTP settings are incomplete (see smtp_settings).")
    try:
        with MailSender(settings) as sender:
            sender.verify_login()
    except MailError as error:
        return Check("smtp_login", "failed", f"{error}", {"step": error.step})
    who = f" as {settings.smtp_username}" if settings.smtp_username else ""
    return Check("smtp_login", "ok",
                 f"Connected to {settings.smtp_server}:{settings.smtp_port} over {tls_mode(settings)} and logged in{who}.")


def check_export_dir(export_dir: Path) -> Check:
    """Writable (a probe file is created and removed) and enough free space.

    A directory that does not exist yet is fine if its nearest existing parent
    is a writable directory: the export creates it. A probe, not os.access(),
    because as root os.access says yes to everything and read-only mounts lie.
    """
    existing = export_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    details: dict[str, Any] = {"path": str(export_dir)}
    if not existing.is_dir():
        what = "is not a directory" if existing == export_dir else f"cannot be created: {existing} is not a directory"
        return Check("export_dir", "failed", f"EXPORT_DIR {export_dir} {what}; point EXPORT_DIR at a directory.", details)
    probe = existing / f".wa-export-health-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        where = export_dir if existing == export_dir else f"{existing} (EXPORT_DIR {export_dir} does not exist yet)"
        return Check(
            "export_dir",
            "failed",
            f"Cannot write in {where} ({error.strerror or error}); make it writable by the user that runs wa-export.",
            details,
        )
    usage = shutil.disk_usage(existing)
    details.update(free_bytes=usage.free, total_bytes=usage.total)
    free = f"{format_bytes(usage.free)} free of {format_bytes(usage.total)}"
    prefix = f"{export_dir} is writable" if existing == export_dir else (
        f"{export_dir} does not exist yet and can be created in {existing}"
    )
    if usage.free < MIN_FREE_BYTES or (usage.total and usage.free / usage.total < MIN_FREE_FRACTION):
        return Check("export_dir", "warning",
                     f"{prefix}, but only {free}; free space or run `wa-export cleanup`.", details)
    return Check("export_dir", "ok", f"{prefix}; {free}.", details)


# --------------------------------------------------------------------------- checks with MongoDB


def check_workspace_addresses(store: Store, settings: Settings) -> Check:
    active = store.active_workspaces()
    if not active:
        return Check("workspace_addresses", "warning",
                     f"No active workspaces in database {settings.mongodb_database!r}; check MONGODB_DATABASE.")
    missing = [w for w in active if not settings.recipients_for(w.id)]
    outside = [
        w for w in active
        if outside_allowed_domains(settings.recipients_for(w.id), settings.export_allowed_email_domains)
    ]
    active_ids = {w.id for w in active}
    unused = sorted(i for i in settings.workspace_emails if i not in active_ids)
    details = {
        "active": len(active),
        "missing": [{"id": w.id, "name": w.name} for w in missing],
        "outside_allowed_domains": [{"id": w.id, "name": w.name} for w in outside],
        "configured_for_unknown_or_inactive": unused,
    }
    label = lambda w: f"{w.name or '(unnamed)'} ({w.id})"  # noqa: E731
    problems = []
    if missing:
        problems.append(
            f"{len(missing)} of {len(active)} active workspaces have no address and are not exported: "
            f"{_named([label(w) for w in missing])}; set WORKSPACE_<ID>_EMAIL for each"
        )
    if outside:
        problems.append(
            f"{len(outside)} workspaces have addresses outside EXPORT_ALLOWED_EMAIL_DOMAINS and fail every export: "
            f"{_named([label(w) for w in outside])}"
        )
    if problems:
        return Check("workspace_addresses", "failed", "; ".join(problems) + ".", details)
    if unused:
        return Check("workspace_addresses", "warning",
                     f"All {len(active)} active workspaces have an address, but WORKSPACE_<ID>_EMAIL is set for "
                     f"ids that are no active workspace (typo?): {_named(unused)}.", details)
    return Check("workspace_addresses", "ok", f"All {len(active)} active workspaces have an address.", details)


def check_indexes(store: Store) -> Check:
    missing = store.missing_indexes()
    if not missing:
        return Check("indexes", "ok", "The supporting indexes on chats and messages exist.")
    commands = [index_command(collection, keys) for collection, keys in missing]
    return Check(
        "indexes",
        "warning",
        "Supporting indexes are missing, so every export scans whole collections; create them once: "
        + "; ".join(commands),
        {"commands": commands},
    )


def check_scheduled_runs(store: Store, settings: Settings, now: datetime) -> Check:
    threshold = timedelta(minutes=2 * settings.export_interval_minutes)
    latest = store.system_logs.find_one(
        # --no-email/--dry-run runs and runs limited to some workspaces keep
        # nothing current: they do not prove the schedule is alive.
        {
            "kind": "export_run",
            "trigger": "scheduled",
            "moves_watermark": {"$ne": False},
            "all_workspaces": {"$ne": False},
        },
        {"timestamp": 1, "failed": 1},
        sort=[("timestamp", -1)],
    )
    hint = "check the crontab (`crontab -l`) or the systemd timer (`systemctl list-timers wa-export.timer`)"
    if latest is None or not isinstance(latest.get("timestamp"), datetime):
        return Check("scheduled_runs", "failed", f"No scheduled run recorded yet; {hint}.")
    last: datetime = latest["timestamp"]
    age = now - last
    details = {"last_run": last, "threshold_minutes": 2 * settings.export_interval_minutes}
    if age > threshold:
        return Check(
            "scheduled_runs",
            "failed",
            f"No scheduled run since {_local(last, settings)} ({_ago(age)}; EXPORT_INTERVAL_MINUTES is "
            f"{settings.export_interval_minutes}); {hint}.",
            details,
        )
    return Check("scheduled_runs", "ok", f"Last scheduled run {_local(last, settings)} ({_ago(age)}).", details)


def check_failed_exports(store: Store, settings: Settings, now: datetime) -> Check:
    since = now - FAILED_EXPORTS_LOOKBACK
    failures = list(
        store.export_logs.aggregate(
            [
                {"$match": {"status": "failed", "created_at": {"$gte": since}}},
                {"$sort": {"created_at": 1}},
                {
                    "$group": {
                        "_id": "$workspace_id",
                        "count": {"$sum": 1},
                        "last_failed_at": {"$max": "$created_at"},
                        "name": {"$last": "$workspace_name"},
                        "error": {"$last": "$error_message"},
                    }
                },
            ]
        )
    )
    if not failures:
        return Check("failed_exports", "ok", "No failed exports in the last 24 hours.")
    # Recovered = a completed export of that workspace after its last failure (the failed
    # window was delivered with it); one query for all failed workspaces.
    earliest = min(f["last_failed_at"] for f in failures)
    last_ok = {
        group["_id"]: group["last_ok"]
        for group in store.export_logs.aggregate(
            [
                {"$match": {"status": "completed", "workspace_id": {"$in": [f["_id"] for f in failures]},
                            "created_at": {"$gte": earliest}}},
                {"$group": {"_id": "$workspace_id", "last_ok": {"$max": "$created_at"}}},
            ]
        )
    }
    still, recovered = [], []
    for failure in sorted(failures, key=lambda f: str(f.get("name") or "")):
        ok_at = last_ok.get(failure["_id"])
        entry = {
            "id": failure["_id"],
            "name": failure.get("name") or "",
            "failures": failure["count"],
            "last_failed_at": failure["last_failed_at"],
            "last_error": redact(str(failure.get("error") or ""), settings.secrets())[:300],
        }
        (recovered if ok_at is not None and ok_at > failure["last_failed_at"] else still).append(entry)
    total = sum(f["count"] for f in failures)
    label = lambda e: f"{e['name'] or '(unnamed)'} ({e['id']}, {e['failures']}x)"  # noqa: E731
    details = {"failed_exports": total, "still_failing": still, "recovered": recovered}
    if still:
        last_error = still[0]["last_error"]
        reason = (
            f"{total} failed exports in the last 24 hours; still failing: {_named([label(e) for e in still])}"
            + (f"; last error of {still[0]['name'] or still[0]['id']}: {last_error}" if last_error else "")
            + ("" if not recovered else f"; recovered since: {_named([label(e) for e in recovered])}")
            + ". `wa-export logs --status failed` shows every error."
        )
        return Check("failed_exports", "failed", reason, details)
    return Check(
        "failed_exports",
        "warning",
        f"{total} failed exports in the last 24 hours, all delivered by a later run: "
        f"{_named([label(e) for e in recovered])}.",
        details,
    )


def check_arrival_order(store: Store, settings: Settings, now: datetime) -> Check:
    """The arrival key is usable on every message, and no cursor is ahead of the database clock."""
    key = ArrivalKey(settings.export_arrival_field)
    problem = arrival_key_problem(store.messages, key)
    if problem is not None:
        return Check("arrival_order", "failed", problem, {"arrival_field": key.field})
    ahead = count_cursors_ahead(store.export_state, key.at, now)
    if ahead:
        return Check(
            "arrival_order",
            "warning",
            f"{ahead} workspace cursor(s) are ahead of the database clock (a clock was wrong when they were set); "
            "the next scheduled run pulls them back to its window end, which hides no message.",
            {"arrival_field": key.field, "cursors_ahead": ahead},
        )
    return Check("arrival_order", "ok", f"Messages are ordered by {key.field}; no cursor is ahead of the database clock.",
                 {"arrival_field": key.field})


def check_possible_duplicates(store: Store, settings: Settings, now: datetime) -> Check:
    entries = recent_possible_duplicates(store.export_logs, now - FAILED_EXPORTS_LOOKBACK)
    if not entries:
        return Check("possible_duplicates", "ok", "No email in the last 24 hours may have repeated an earlier one.")
    names = list(dict.fromkeys(f"{e.get('workspace_name') or '(unnamed)'} ({e.get('workspace_id')})" for e in entries))
    last = entries[0].get("created_at")
    when = f"; the latest at {_local(last, settings)}" if isinstance(last, datetime) else ""
    return Check(
        "possible_duplicates",
        "warning",
        f"{len(entries)} email(s) in the last 24 hours may repeat messages of an earlier one (an earlier run's "
        f"outcome was unknown; each such email says so): {_named(names)}{when}. "
        "`wa-export logs` marks them possible_duplicate.",
        {"count": len(entries), "workspaces": names},
    )


# --------------------------------------------------------------------------- the run


def _guarded(name: str, settings: Settings, check: Callable[[], Check]) -> Check:
    """A database error inside one check fails that check, not the whole report."""
    try:
        return check()
    except PyMongoError as error:
        return Check(name, "failed", describe_mongo_error(error, settings))


def run_health(
    settings: Settings,
    *,
    smtp_login: bool = False,
    open_store: Callable[[Settings], Store] = Store.open,
) -> HealthReport:
    now = utc_now()
    report = HealthReport(checked_at=now)
    store: Store | None = None
    try:
        try:
            store = open_store(settings)
            mongo = Check("mongodb", "ok", f"Reachable; database {settings.mongodb_database!r}.")
        except MongoUnavailable as error:
            mongo = Check("mongodb", "failed", str(error))
        report.checks.append(mongo)

        smtp = check_smtp_settings(settings)
        report.checks.append(smtp)
        if smtp_login:
            report.checks.append(check_smtp_login(settings, smtp))
        report.checks.append(check_export_dir(settings.export_dir))

        if store is not None:
            try:  # the database's clock, the one the runs write their times on
                now = store.database_now()
            except MongoUnavailable:
                pass
        database_checks: list[tuple[str, Callable[[Store], Check]]] = [
            ("workspace_addresses", lambda s: check_workspace_addresses(s, settings)),
            ("indexes", check_indexes),
            ("arrival_order", lambda s: check_arrival_order(s, settings, now)),
            ("scheduled_runs", lambda s: check_scheduled_runs(s, settings, now)),
            ("failed_exports", lambda s: check_failed_exports(s, settings, now)),
            ("possible_duplicates", lambda s: check_possible_duplicates(s, settings, now)),
        ]
        for name, check in database_checks:
            if store is None:
                report.checks.append(Check(name, "skipped", "Not checked: MongoDB is unreachable."))
            else:
                current = store
                report.checks.append(_guarded(name, settings, lambda: check(current)))

        if store is not None:
            report.recorded = _record(store, report)
    finally:
        if store is not None:
            store.close()
    return report


def _record(store: Store, report: HealthReport) -> bool:
    try:
        store.system_logs.insert_one(
            {
                "event_type": "health_check",
                "message": report.summary(),
                "timestamp": utc_now(),
                "service": SERVICE_NAME,
                "kind": "health_check",
                "status": report.status,
                "host": socket.gethostname(),
                "checks": [{"name": c.name, "status": c.status, "reason": c.reason} for c in report.checks],
            }
        )
    except PyMongoError:
        return False  # the report itself is still printed; a refused log write is no health failure
    return True


__all__ = ["Check", "HealthReport", "check_export_dir", "index_command", "run_health"]
