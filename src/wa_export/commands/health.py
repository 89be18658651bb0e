"""`wa-export health`: is the export working, and if not, what to do.

One `Check` per question an operator asks at 3 a.m., each `ok`, `warning` or
`failed` with a one-sentence reason (`skipped` when it needs MongoDB and MongoDB
is down). Any failed check makes the exit code 1 -- including an unreachable
MongoDB, so a monitor needs one rule for `health`. The report is recorded as a
`health_check` event in `system_logs` when MongoDB is reachable.

Why this module is long: one short function per check (MongoDB, SMTP, the
export folder, workspaces stored twice, indexes, arrival order, scheduled runs,
failed exports, possible duplicates) and the runner that guards each; the
address and folder checks live in health_addresses.py and workspace_checks.py,
the wording in health_check.py.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pymongo.errors import PyMongoError

from wa_export.clock import as_utc, utc_now
from wa_export.commands.health_addresses import check_workspace_addresses
from wa_export.commands.health_check import Check, CheckStatus, clause, count_noun, local_time, named, sentence
from wa_export.commands.workspace_checks import check_export_folders
from wa_export.errors import ExitCode, MongoUnavailable
from wa_export.mail.errors import MailError
from wa_export.mail.message import check_sendable
from wa_export.mail.sender import MailSender
from wa_export.mail.transport import tls_mode
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store import logs
from wa_export.store.arrivals import ArrivalKey, check_arrival_key
from wa_export.store.connection import SERVICE_NAME, Store, describe_mongo_error
from wa_export.store.logs import recent_possible_duplicates
from wa_export.store.state import count_cursors_ahead, count_foreign_cursors, last_successes
from wa_export.units import format_ago, format_bytes

# Free space below either threshold is a warning: a full disk fails every export.
MIN_FREE_BYTES = 1024**3
MIN_FREE_FRACTION = 0.05
FAILED_EXPORTS_LOOKBACK = timedelta(hours=24)


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
            if self.count(worst) > 0:
                return worst
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
            "ok": self.exit_code == ExitCode.OK,
            "status": self.status,
            "exit_code": self.exit_code,
            "checked_at": self.checked_at.isoformat(),
            "summary": self.summary(),
            "recorded": self.recorded,
            "checks": [check.as_dict() for check in self.checks],
        }


# --------------------------------------------------------------------------- helpers


def _failure_label(entry: dict[str, Any]) -> str:
    return f"{entry['name'] or '(unnamed)'} ({entry['id']}, {entry['failures']}x)"


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
        return Check(
            "smtp_settings",
            "warning",
            f"SMTP settings complete ({where}) but SMTP_SECURITY=none sends passwords and exports unencrypted.",
            details,
        )
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
    return Check(
        "smtp_login",
        "ok",
        f"Connected to {settings.smtp_server}:{settings.smtp_port} over {tls_mode(settings)} and logged in{who}.",
    )


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
        return Check(
            "export_dir", "failed", f"EXPORT_DIR {export_dir} {what}; point EXPORT_DIR at a directory.", details
        )
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
    prefix = (
        f"{export_dir} is writable"
        if existing == export_dir
        else (f"{export_dir} does not exist yet and can be created in {existing}")
    )
    if usage.free < MIN_FREE_BYTES or (usage.total and usage.free / usage.total < MIN_FREE_FRACTION):
        return Check(
            "export_dir", "warning", f"{prefix}, but only {free}; free space or run `wa-export cleanup`.", details
        )
    return Check("export_dir", "ok", f"{prefix}; {free}.", details)


# --------------------------------------------------------------------------- checks with MongoDB


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


def check_duplicate_workspaces(store: Store) -> Check:
    """Workspace ids stored twice (an ObjectId and a string `_id`): exported once, but the data needs fixing."""
    duplicates = store.stored_twice()
    if not duplicates:
        return Check("duplicate_workspaces", "ok", "Every workspace id is stored once.")
    return Check(
        "duplicate_workspaces",
        "warning",
        sentence([duplicate.sentence() for duplicate in duplicates]),
        {
            "workspaces": [
                {
                    "id": d.id,
                    "documents": [
                        {"id_type": kind, "name": name, "status": status} for kind, name, status in d.documents
                    ],
                }
                for d in duplicates
            ]
        },
    )


def check_scheduled_runs(store: Store, settings: Settings, now: datetime) -> Check:
    threshold = timedelta(minutes=2 * settings.export_interval_minutes)
    latest = store.system_logs.find_one(
        # --no-email/--dry-run runs and runs limited to some workspaces keep
        # nothing current: they do not prove the schedule is alive.
        {
            "kind": logs.EXPORT_RUN,
            "trigger": "scheduled",
            "moves_watermark": {"$ne": False},
            "all_workspaces": {"$ne": False},
        },
        {"timestamp": 1, "failed": 1},
        sort=[("timestamp", -1)],
    )
    hint = "check the crontab (`crontab -l`) or the systemd timer (`systemctl list-timers wa-export.timer`)"
    if latest is None or not isinstance(latest.get("timestamp"), datetime):
        return _no_scheduled_run_yet(store, settings, now, threshold, hint)
    last: datetime = latest["timestamp"]
    age = now - last
    details = {"last_run": last, "threshold_minutes": 2 * settings.export_interval_minutes}
    if age > threshold:
        return Check(
            "scheduled_runs",
            "failed",
            f"No scheduled run since {local_time(last, settings)} ({format_ago(age)}; EXPORT_INTERVAL_MINUTES is "
            f"{settings.export_interval_minutes}); {hint}.",
            details,
        )
    return Check(
        "scheduled_runs", "ok", f"Last scheduled run {local_time(last, settings)} ({format_ago(age)}).", details
    )


def _no_scheduled_run_yet(store: Store, settings: Settings, now: datetime, threshold: timedelta, hint: str) -> Check:
    """A fresh install (wa-export first used moments ago) is a warning; weeks without a scheduled run are not."""
    first = store.system_logs.find_one({"service": SERVICE_NAME}, {"timestamp": 1}, sort=[("timestamp", 1)])
    first_used = first.get("timestamp") if first is not None else None
    if isinstance(first_used, datetime) and now - as_utc(first_used) > threshold:
        return Check(
            "scheduled_runs",
            "failed",
            f"No scheduled run recorded, although wa-export has been used here since {local_time(first_used, settings)} "
            f"({format_ago(now - as_utc(first_used))}); {hint}.",
            {"first_used": first_used},
        )
    return Check(
        "scheduled_runs",
        "warning",
        f"No scheduled run recorded yet (a new installation?); once the timer should be running, {hint}.",
    )


def check_failed_exports(store: Store, settings: Settings, now: datetime) -> Check:
    since = now - FAILED_EXPORTS_LOOKBACK
    failures = list(
        store.export_logs.aggregate(
            [
                {"$match": {"status": logs.STATUS_FAILED, "created_at": {"$gte": since}}},
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
    last_ok = _last_successes(store, [f["_id"] for f in failures], min(f["last_failed_at"] for f in failures))
    still: list[dict[str, Any]] = []
    recovered: list[dict[str, Any]] = []
    for failure in sorted(failures, key=lambda f: str(f.get("name") or "")):
        ok_at = last_ok.get(str(failure["_id"]))
        entry = {
            "id": failure["_id"],
            "name": failure.get("name") or "",
            "failures": failure["count"],
            "last_failed_at": failure["last_failed_at"],
            "last_error": redact(str(failure.get("error") or ""), settings.secrets())[:300],
        }
        (recovered if ok_at is not None and ok_at > failure["last_failed_at"] else still).append(entry)
    total = sum(f["count"] for f in failures)
    details = {"failed_exports": total, "still_failing": still, "recovered": recovered}
    counted = f"{count_noun(total, 'failed export')} in the last 24 hours"
    if still:
        last_error = clause(still[0]["last_error"])
        clauses = [f"{counted}; still failing: {named([_failure_label(e) for e in still])}"]
        if last_error:
            clauses.append(f"last error of {still[0]['name'] or still[0]['id']}: {last_error}")
        if recovered:
            clauses.append(f"recovered since: {named([_failure_label(e) for e in recovered])}")
        clauses.append("`wa-export logs --status failed` shows every error")
        return Check("failed_exports", "failed", sentence(clauses), details)
    return Check(
        "failed_exports",
        "warning",
        sentence([f"{counted}, all delivered by a later run: {named([_failure_label(e) for e in recovered])}"]),
        details,
    )


def _last_successes(store: Store, workspace_ids: list[Any], earliest: datetime) -> dict[str, datetime]:
    """When each workspace last succeeded: a completed export, or a scheduled run that moved its cursor.

    A scheduled run with no new messages writes no export_logs entry, but it
    sets export_state.last_success_at: the failed window was delivered (or was
    empty) by then, so that workspace has recovered too. One query per source
    for all failed workspaces.
    """
    last_ok: dict[str, datetime] = {}

    def keep(workspace_id: Any, moment: Any) -> None:
        if isinstance(moment, datetime):
            moment = as_utc(moment)
            key = str(workspace_id)
            if key not in last_ok or moment > last_ok[key]:
                last_ok[key] = moment

    for group in store.export_logs.aggregate(
        [
            {
                "$match": {
                    "status": logs.STATUS_COMPLETED,
                    "workspace_id": {"$in": workspace_ids},
                    "created_at": {"$gte": earliest},
                }
            },
            {"$group": {"_id": "$workspace_id", "last_ok": {"$max": "$created_at"}}},
        ]
    ):
        keep(group["_id"], group["last_ok"])
    for workspace_id, moment in last_successes(store, [str(id_) for id_ in workspace_ids], earliest).items():
        keep(workspace_id, moment)
    return last_ok


def check_arrival_order(store: Store, settings: Settings, now: datetime) -> Check:
    """The arrival key sees the messages (the probes a scheduled run makes), and no cursor is ahead of the clock."""
    key = ArrivalKey(settings.export_arrival_field)
    problem = check_arrival_key(store.messages, key).problem
    if problem is not None:
        return Check("arrival_order", "failed", problem, {"arrival_field": key.field})
    # Cursors of the other kind: scheduled runs refuse those workspaces (ArrivalKey.position).
    foreign = count_foreign_cursors(store, key)
    if foreign:
        return Check(
            "arrival_order",
            "failed",
            f"{foreign} workspace cursor(s) were written while EXPORT_ARRIVAL_FIELD named another kind of field than "
            f"{key.field!r} ({key.type_name}): scheduled runs refuse those workspaces until you set EXPORT_ARRIVAL_FIELD "
            "back or move each cursor with `wa-export state ID --move-to TIME`.",
            {"arrival_field": key.field, "foreign_cursors": foreign},
        )
    ahead = count_cursors_ahead(store, key, now)
    if ahead:
        return Check(
            "arrival_order",
            "warning",
            f"{ahead} workspace cursor(s) are ahead of the database clock (a clock was wrong when they were set); "
            "the next scheduled run pulls them back to its window end, which hides no message.",
            {"arrival_field": key.field, "cursors_ahead": ahead},
        )
    return Check(
        "arrival_order",
        "ok",
        f"Messages are ordered by {key.field}; no cursor is ahead of the database clock.",
        {"arrival_field": key.field},
    )


def check_possible_duplicates(store: Store, settings: Settings, now: datetime) -> Check:
    entries = recent_possible_duplicates(store.export_logs, now - FAILED_EXPORTS_LOOKBACK)
    if not entries:
        return Check("possible_duplicates", "ok", "No email in the last 24 hours may have repeated an earlier one.")
    names = list(dict.fromkeys(f"{e.get('workspace_name') or '(unnamed)'} ({e.get('workspace_id')})" for e in entries))
    last = entries[0].get("created_at")
    when = f"; the latest at {local_time(last, settings)}" if isinstance(last, datetime) else ""
    return Check(
        "possible_duplicates",
        "warning",
        f"{len(entries)} email(s) in the last 24 hours may repeat messages of an earlier one (an earlier run's "
        f"outcome was unknown; each such email says so): {named(names)}{when}. "
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
            ("duplicate_workspaces", check_duplicate_workspaces),
            ("export_folders", lambda s: check_export_folders(s, settings)),
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
                report.checks.append(_guarded(name, settings, functools.partial(check, store)))

        if store is not None:
            report.recorded = _record(store, report)
    finally:
        if store is not None:
            store.close()
    return report


def _record(store: Store, report: HealthReport) -> bool:
    try:
        checks = [{"name": c.name, "status": c.status, "reason": c.reason} for c in report.checks]
        details = logs.HealthCheckDetails(status=report.status, checks=checks)
        logs.record_health_check(store.system_logs, report.summary(), utc_now(), details)
    except PyMongoError:
        return False  # the report itself is still printed; a refused log write is no health failure
    return True


__all__ = ["Check", "HealthReport", "check_export_dir", "index_command", "run_health"]
