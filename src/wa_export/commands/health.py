"""`wa-export health`: one `Check` per question an operator asks, judged by the export's own rules (recipients.py,
workbook/naming.py) so it predicts the next run; any failed check exits 1.

Why this module is long: one short function per check, the runner that guards each, and their shared wording.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pymongo.errors import PyMongoError

from wa_export.clock import as_utc, utc_now
from wa_export.errors import ExitCode, MongoUnavailable
from wa_export.export.results import run_warnings, unmatched_variable_warnings
from wa_export.mail.errors import MailError
from wa_export.mail.message import check_sendable
from wa_export.mail.sender import MailSender
from wa_export.mail.transport import tls_mode
from wa_export.recipients import (
    SOURCE_LABELS,
    UNSENT_WITHOUT_ADDRESS,
    RecipientSource,
    missing_hint,
    recipients_for,
)
from wa_export.redaction import redact
from wa_export.schedule import overdue_since
from wa_export.settings import (
    Settings,
    export_dir_not_a_directory,
    malformed_variables_sentence,
    unmatched_variables_sentence,
)
from wa_export.store import logs
from wa_export.store.arrivals import ArrivalKey, check_arrival_key
from wa_export.store.connection import SERVICE_NAME, Store, Workspace, describe_mongo_error
from wa_export.store.logs import recent_possible_duplicates
from wa_export.store.state import count_cursors_ahead, count_foreign_cursors, last_successes, read_states
from wa_export.units import count_noun, format_ago, format_bytes, has, is_, local_time
from wa_export.workbook.naming import FOLDER_MARKER, slugify, unclaimed_folders
from wa_export.workbook_password import workbook_password
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, resolve

CheckStatus = Literal["ok", "warning", "failed", "skipped"]
NAMES_SHOWN = 10  # longer lists are cut in the reason; `details` (and --json) has them all

# Free space below either threshold is a warning: a full disk fails every export.
MIN_FREE_BYTES = 1024**3
MIN_FREE_FRACTION = 0.05
FAILED_EXPORTS_LOOKBACK = timedelta(hours=24)


@dataclass
class Check:
    name: str
    status: CheckStatus
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


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
            "checks": [asdict(check) for check in self.checks],
        }


# Reasons embed texts from elsewhere (driver errors, stored errors, names): no doubled punctuation.
def named(items: list[str]) -> str:
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


def first_of(items: list[str]) -> str:
    """The first item and how many more: a reason stays one short sentence, `details` (--json) has them all."""
    return items[0] + (f" and {len(items) - 1} more" if len(items) > 1 else "")


def clause(text: str) -> str:
    """Text from elsewhere made fit to continue a sentence: no final punctuation."""
    return text.strip().rstrip(".;: ")


def sentence(clauses: list[str]) -> str:
    """Clauses joined with "; " into one sentence with one capital and one final period."""
    text = "; ".join(clause(part) for part in clauses if clause(part))
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _label(workspace: Workspace) -> str:
    return f"{workspace.name or '(unnamed)'} ({workspace.id})"


def _failure_label(entry: dict[str, Any]) -> str:
    return f"{entry['name'] or '(unnamed)'} ({entry['id']}, {entry['failures']}x)"


def check_smtp_settings(settings: Settings) -> Check:
    try:
        check_sendable(settings)
    except MailError as error:
        return Check("smtp_settings", "failed", str(error))
    mode = tls_mode(settings)
    login = f"login as {settings.smtp_username}" if settings.smtp_username else "no login"
    where = f"{settings.smtp_server}:{settings.smtp_port}, {mode}, {login}, from {settings.smtp_from}"
    details = {"server": settings.smtp_server, "port": settings.smtp_port, "security": mode}
    plain = mode == "none"
    note = " but SMTP_SECURITY=none sends passwords and exports unencrypted" if plain else ""
    return Check("smtp_settings", "warning" if plain else "ok", f"SMTP settings complete ({where}){note}.", details)


def check_smtp_login(settings: Settings, settings_check: Check) -> Check:
    if settings_check.status == "failed":
        return Check("smtp_login", "failed", "Not tried: the SMTP settings are incomplete (see smtp_settings).")
    try:
        with MailSender(settings) as sender:
            sender.verify_login()
    except MailError as error:
        return Check("smtp_login", "failed", str(error), {"step": error.step})
    who = f" as {settings.smtp_username}" if settings.smtp_username else ""
    where = f"{settings.smtp_server}:{settings.smtp_port} over {tls_mode(settings)}"
    return Check("smtp_login", "ok", f"Connected to {where} and logged in{who}.")


def check_export_dir(export_dir: Path) -> Check:
    """Writable (or creatable) and enough free space: a probe file, as os.access() lies to root and on read-only mounts."""
    existing = export_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    details: dict[str, Any] = {"path": str(export_dir)}
    if not existing.is_dir():
        return Check("export_dir", "failed", export_dir_not_a_directory(export_dir, existing), details)
    probe = existing / f".wa-export-health-{secrets.token_hex(4)}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        where = export_dir if existing == export_dir else f"{existing} (EXPORT_DIR {export_dir} does not exist yet)"
        reason = (
            f"Cannot write in {where} ({error.strerror or error}); make it writable by the user that runs wa-export."
        )
        return Check("export_dir", "failed", reason, details)
    usage = shutil.disk_usage(existing)
    details.update(free_bytes=usage.free, total_bytes=usage.total)
    free = f"{format_bytes(usage.free)} free of {format_bytes(usage.total)}"
    prefix = f"{export_dir} is writable"
    if existing != export_dir:
        prefix = f"{export_dir} does not exist yet and can be created in {existing}"
    if usage.free < MIN_FREE_BYTES or (usage.total and usage.free / usage.total < MIN_FREE_FRACTION):
        reason = f"{prefix}, but only {free}; free space or run `wa-export cleanup`."
        return Check("export_dir", "warning", reason, details)
    return Check("export_dir", "ok", f"{prefix}; {free}.", details)


def check_workspace_addresses(store: Store, settings: Settings, now: datetime) -> Check:
    active = store.active_workspaces()  # a database without a workspaces collection ends health: exit 2
    if not active:
        messages = [warning.message for warning in run_warnings(settings, [], covers_all_active=True)]
        return Check("workspace_addresses", "warning", sentence(messages))
    recipients = {w.id: recipients_for(w, settings) for w in active}
    # A workspace whose schedule is off is exported by hand only: it needs no address.
    off = {w.id for w in active if str(resolve(SCHEDULE, w, settings).value) == "off"}
    missing = [w for w in active if recipients[w.id].source == "none" and w.id not in off]
    refused = [w for w in active if recipients[w.id].problem]
    invalid = [w for w in refused if recipients[w.id].problem_kind == "invalid"]
    outside = [w for w in refused if recipients[w.id].problem_kind == "domain"]
    unmatched = unmatched_variable_warnings(settings, (w.id for w in active))
    unused = [warning.workspace_id for warning in unmatched if warning.workspace_id is not None]
    stray = [warning.variable for warning in unmatched if warning.workspace_id is not None and warning.variable]
    malformed = list(settings.malformed_workspace_variables)
    listed: tuple[RecipientSource, ...] = ("environment", "database", "none")
    sources = {source: sum(1 for r in recipients.values() if r.source == source) for source in listed}
    details = {
        "active": len(active),
        "sources": sources,
        "workspaces": [{"id": w.id, "name": w.name, **recipients[w.id].as_dict()} for w in active],
        "missing": [{"id": w.id, "name": w.name} for w in missing],
        "refused": [{"id": w.id, "name": w.name, "problem": recipients[w.id].problem} for w in refused],
        "invalid": [{"id": w.id, "name": w.name, "problem": recipients[w.id].problem} for w in invalid],
        "outside_allowed_domains": [{"id": w.id, "name": w.name} for w in outside],
        "configured_for_unknown_or_inactive": unused,
        "malformed_variables": malformed,
    }
    where = ", ".join(
        f"{count} from the {SOURCE_LABELS[source]}"
        + (f" {settings.export_recipients_field}" if source == "database" else " WORKSPACE_<ID>_EMAIL")
        for source, count in sources.items()
        if count and source != "none"
    )
    problems = []
    if missing:
        problems.append(
            f"{count_noun(len(missing), 'active workspace')} of {len(active)} {has(len(missing))} no address "
            f"and {is_(len(missing))} not exported: {first_of([_label(w) for w in missing])}; "
            f"{missing_hint('<ID>', settings)} for each; {UNSENT_WITHOUT_ADDRESS}"
        )
    if refused:
        problems.append(
            f"{count_noun(len(refused), 'workspace')} fail{'s' if len(refused) == 1 else ''} every export for a "
            f"refused address, first {_label(refused[0])}: {clause(recipients[refused[0].id].problem or '')}"
        )
    notes = []
    if stray:
        notes.append(unmatched_variables_sentence(stray, settings.mongodb_database))
    if malformed:
        notes.append(malformed_variables_sentence(malformed))
    sources_clause = f" ({where})" if where else ""
    if problems:
        if where and not refused:  # refused addresses are among the sources: "the others" would be wrong
            problems.append(f"addresses of the others: {where}")
        return Check("workspace_addresses", "failed", sentence(problems + notes), details)
    all_have = f"All {len(active)} active workspaces have an address{sources_clause}"
    if notes:
        return Check("workspace_addresses", "warning", sentence([f"{all_have}, but {notes[0]}", *notes[1:]]), details)
    return Check("workspace_addresses", "ok", f"{all_have}.", details)


def check_workbook_passwords(store: Store, settings: Settings, now: datetime) -> Check:
    """How many active workspaces get encrypted workbooks; failed for each one a run would refuse."""
    active = store.active_workspaces()
    resolved = {w.id: workbook_password(w, settings) for w in active}
    encrypted = [w for w in active if resolved[w.id].value is not None]
    refused = [w for w in active if resolved[w.id].problem is not None]
    details = {
        "active": len(active),
        "encrypted": len(encrypted),
        "required": settings.export_require_workbook_password,
        "workspaces": [{"id": w.id, "name": w.name, **resolved[w.id].as_dict(secret=True)} for w in active],
        "refused": [{"id": w.id, "name": w.name, "problem": resolved[w.id].problem} for w in refused],
    }
    counted = f"{len(encrypted)} of {count_noun(len(active), 'active workspace')} get password-protected workbooks"
    if refused:
        first = resolved[refused[0].id].problem
        return Check(
            "workbook_passwords",
            "failed",
            sentence(
                [
                    f"{count_noun(len(refused), 'workspace')} {is_(len(refused))} not exported for want of a usable "
                    f"workbook password: {named([_label(w) for w in refused])} (first: {first})",
                    counted,
                ]
            ),
            details,
        )
    required = "; EXPORT_REQUIRE_WORKBOOK_PASSWORD is true" if settings.export_require_workbook_password else ""
    return Check("workbook_passwords", "ok", f"{counted}{required}.", details)


def check_export_folders(store: Store, settings: Settings, now: datetime) -> Check:
    """Folders without an owner marker (the original service's) that an export would adopt, or could not."""
    by_slug: dict[str, list[Workspace]] = {}
    for workspace in store.active_workspaces():
        by_slug.setdefault(slugify(workspace.name, workspace.id), []).append(workspace)
    try:
        unclaimed = unclaimed_folders(settings.export_dir, by_slug)
    except OSError as error:
        return Check(
            "export_folders",
            "warning",
            f"Cannot inspect the folders in {settings.export_dir} ({error.strerror or error}); "
            "make EXPORT_DIR readable by the user that runs wa-export.",
        )
    contested = [slug for slug in unclaimed if len(by_slug[slug]) > 1]
    adoptable = [slug for slug in unclaimed if len(by_slug[slug]) == 1]
    folder = {slug: str(settings.export_dir / slug) for slug in unclaimed}
    details = {
        "contested": [
            {"folder": folder[slug], "workspaces": [{"id": w.id, "name": w.name} for w in by_slug[slug]]}
            for slug in contested
        ],
        "to_adopt": [
            {"folder": folder[slug], "workspace": {"id": by_slug[slug][0].id, "name": by_slug[slug][0].name}}
            for slug in adoptable
        ],
    }
    adopt_note = (
        f"{count_noun(len(adoptable), 'folder')} without an owner marker will be adopted by their workspace "
        "on its next export: " + named([f"{slug}/ by {_label(by_slug[slug][0])}" for slug in adoptable])
        if adoptable
        else ""
    )
    if contested:
        slug = contested[0]
        reason = (
            f"{count_noun(len(contested), 'folder')} without an owner marker {is_(len(contested))} adopted by nobody "
            "because several active "
            f"workspaces have their name: {named([f'{s}/' for s in contested])}; "
            f"{settings.export_dir / slug} could belong to {named([_label(w) for w in by_slug[slug]])}, so each "
            f"exports into its own {slug}_<id> folder; to give the folder to one of them, write that workspace's "
            f"id into {settings.export_dir / slug / FOLDER_MARKER}"
        )
        return Check("export_folders", "warning", reason + (f"; {adopt_note}" if adopt_note else "") + ".", details)
    if adopt_note:
        return Check("export_folders", "ok", adopt_note + ".", details)
    return Check(
        "export_folders", "ok", "Every workspace folder in EXPORT_DIR has its owner marker or is new.", details
    )


def check_indexes(store: Store, settings: Settings, now: datetime) -> Check:
    missing = store.missing_indexes()
    if not missing:
        return Check("indexes", "ok", "The supporting indexes on chats, messages and export_logs exist.")
    # mongosh commands, e.g. db.chats.createIndex({ workspace_id: 1 })
    commands = [
        f"db.{collection}.createIndex({{ {', '.join(f'{name}: {order}' for name, order in keys)} }})"
        for collection, keys in missing
    ]
    reason = "Supporting indexes are missing, so exports (and `verify`) scan whole collections; create them once: "
    return Check("indexes", "warning", reason + "; ".join(commands), {"commands": commands})


def check_duplicate_workspaces(store: Store, settings: Settings, now: datetime) -> Check:
    """Workspace ids stored twice (an ObjectId and a string `_id`): exported once, but the data needs fixing."""
    duplicates = store.stored_twice()
    if not duplicates:
        return Check("duplicate_workspaces", "ok", "Every workspace id is stored once.")
    listed = [
        {
            "id": d.id,
            "documents": [{"id_type": kind, "name": name, "status": status} for kind, name, status in d.documents],
        }
        for d in duplicates
    ]
    return Check(
        "duplicate_workspaces", "warning", sentence([d.sentence() for d in duplicates]), {"workspaces": listed}
    )


def check_scheduled_runs(store: Store, settings: Settings, now: datetime) -> Check:
    threshold = timedelta(minutes=2 * settings.export_interval_minutes)
    hint = "check the crontab (`crontab -l`) or the systemd timer (`systemctl list-timers wa-export.timer`)"
    # --no-email/--dry-run runs and runs limited to some workspaces keep nothing current:
    # they do not prove the schedule is alive. (`moves_watermark` is the stored field's name.)
    proving = {"kind": logs.EXPORT_RUN, "trigger": "scheduled", "moves_watermark": {"$ne": False}}
    latest = store.system_logs.find_one(
        {**proving, "all_workspaces": {"$ne": False}}, {"timestamp": 1}, sort=[("timestamp", -1)]
    )
    last = latest.get("timestamp") if latest is not None else None
    if isinstance(last, datetime):
        age = now - last
        details = {"last_run": last, "threshold_minutes": 2 * settings.export_interval_minutes}
        when = f"{local_time(last, settings, zoned=True)} ({format_ago(age)}"
        if age > threshold:
            reason = f"No scheduled run since {when}; EXPORT_INTERVAL_MINUTES is {settings.export_interval_minutes})"
            return Check("scheduled_runs", "failed", f"{reason}; {hint}.", details)
        return Check("scheduled_runs", "ok", f"Last scheduled run {when}).", details)
    # A fresh install (wa-export first used moments ago) is a warning; weeks without a scheduled run are not.
    first = store.system_logs.find_one({"service": SERVICE_NAME}, {"timestamp": 1}, sort=[("timestamp", 1)])
    first_used = first.get("timestamp") if first is not None else None
    if isinstance(first_used, datetime) and now - as_utc(first_used) > threshold:
        since = f"{local_time(first_used, settings, zoned=True)} ({format_ago(now - as_utc(first_used))})"
        reason = f"No scheduled run recorded, although wa-export has been used here since {since}; {hint}."
        return Check("scheduled_runs", "failed", reason, {"first_used": first_used})
    reason = f"No scheduled run recorded yet (a new installation?); once the timer should be running, {hint}."
    return Check("scheduled_runs", "warning", reason)


def check_workspace_schedules(store: Store, settings: Settings, now: datetime) -> Check:
    """Each hourly or daily workspace against its own slots: stale once a slot has waited unserved for longer than
    EXPORT_INTERVAL_MINUTES, since the first scheduled run at or after a slot serves it."""
    active = store.active_workspaces()
    threshold = timedelta(minutes=settings.export_interval_minutes)
    timed = [(w, resolve(TIME_ZONE, w, settings), resolve(SCHEDULE, w, settings)) for w in active]
    problems = [
        zone.problem or schedule.problem or "" for _, zone, schedule in timed if zone.problem or schedule.problem
    ]
    slotted = [
        (w, zone.value, schedule.value) for w, zone, schedule in timed if schedule.value and schedule.value.has_slots
    ]
    states = read_states(store, [w.id for w, _, _ in slotted]) if slotted else {}
    stale: list[dict[str, Any]] = []
    for workspace, zone, schedule in slotted:
        assert zone is not None and schedule is not None
        state = states.get(workspace.id)
        since = overdue_since(schedule, zone, now, state.served if state is not None else None)
        if since is None or now - since <= threshold:
            continue
        stale.append({"id": workspace.id, "name": workspace.name, "schedule": str(schedule), "slot_missed": since})
        problems.insert(
            len(stale) - 1,
            f"{_label(workspace)} ({schedule} in {zone.key}) has not been delivered since its slot at "
            f"{local_time(since, settings, zoned=True)} ({format_ago(now - since)})",
        )
    details = {
        "schedules": dict(Counter(str(schedule.value or "invalid") for _, _, schedule in timed)),
        "stale": stale,
        "invalid": len(problems) - len(stale),
    }
    if problems:
        more = f" ({len(problems) - NAMES_SHOWN} more in the details)" if len(problems) > NAMES_SHOWN else ""
        hint = f"`wa-export state` shows each workspace's schedule and next delivery{more}"
        return Check("workspace_schedules", "failed", sentence([*problems[:NAMES_SHOWN], hint]), details)
    if not slotted:
        return Check("workspace_schedules", "ok", f"All {len(active)} active workspaces are on schedule.", details)
    on_time = f"{count_noun(len(slotted), 'hourly or daily workspace')} delivered {'its' if len(slotted) == 1 else 'their'} latest slot on time"
    return Check("workspace_schedules", "ok", sentence([on_time]), details)


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
        first = _failure_label(still[0]) + (f": {last_error}" if last_error else "")
        clauses = [f"{counted}; {count_noun(len(still), 'workspace')} still failing, first {first}"]
        if recovered:
            clauses.append(f"{count_noun(len(recovered), 'workspace')} recovered since")
        clauses.append("`wa-export logs --status failed` shows every error")
        return Check("failed_exports", "failed", sentence(clauses), details)
    reason = sentence([f"{counted}, all delivered by a later run: {first_of([_failure_label(e) for e in recovered])}"])
    return Check("failed_exports", "warning", reason, details)


def _last_successes(store: Store, workspace_ids: list[Any], earliest: datetime) -> dict[str, datetime]:
    """When each workspace last succeeded: a completed export, or a scheduled run that moved its cursor
    (a run with no new messages writes no export_logs entry, but sets export_state.last_success_at)."""
    completed = {
        "status": logs.STATUS_COMPLETED,
        "trigger": {"$ne": logs.TRIGGER_RESEND},  # an operator's resend delivers nothing new
        "workspace_id": {"$in": workspace_ids},
        "created_at": {"$gte": earliest},
    }
    group = {"$group": {"_id": "$workspace_id", "last_ok": {"$max": "$created_at"}}}
    found: list[tuple[Any, Any]] = [
        (g["_id"], g["last_ok"]) for g in store.export_logs.aggregate([{"$match": completed}, group])
    ]
    found += last_successes(store, [str(id_) for id_ in workspace_ids], earliest).items()
    last_ok: dict[str, datetime] = {}
    for workspace_id, moment in found:
        if isinstance(moment, datetime):
            key, moment = str(workspace_id), as_utc(moment)
            last_ok[key] = max(moment, last_ok.get(key, moment))
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
        reason = (
            f"{foreign} workspace cursor(s) were written while EXPORT_ARRIVAL_FIELD named another kind of field than "
            f"{key.field!r} ({key.type_name}): scheduled runs refuse those workspaces until you set EXPORT_ARRIVAL_FIELD "
            "back or move each cursor with `wa-export state ID --move-to TIME`."
        )
        return Check("arrival_order", "failed", reason, {"arrival_field": key.field, "foreign_cursors": foreign})
    ahead = count_cursors_ahead(store, key, now)
    if ahead:
        reason = (
            f"{ahead} workspace cursor(s) are ahead of the database clock (a clock was wrong when they were set); "
            "the next scheduled run pulls them back to its window end, which hides no message."
        )
        return Check("arrival_order", "warning", reason, {"arrival_field": key.field, "cursors_ahead": ahead})
    reason = f"Messages are ordered by {key.field}; no cursor is ahead of the database clock."
    return Check("arrival_order", "ok", reason, {"arrival_field": key.field})


def check_possible_duplicates(store: Store, settings: Settings, now: datetime) -> Check:
    entries = recent_possible_duplicates(store.export_logs, now - FAILED_EXPORTS_LOOKBACK)
    if not entries:
        return Check("possible_duplicates", "ok", "No email in the last 24 hours may have repeated an earlier one.")
    names = list(dict.fromkeys(f"{e.get('workspace_name') or '(unnamed)'} ({e.get('workspace_id')})" for e in entries))
    last = entries[0].get("created_at")
    when = f"; the latest at {local_time(last, settings, zoned=True)}" if isinstance(last, datetime) else ""
    reason = (
        f"{len(entries)} email(s) in the last 24 hours may repeat messages of an earlier one (an earlier run's "
        f"outcome was unknown; each such email says so): {named(names)}{when}. "
        "`wa-export logs` marks them possible_duplicate."
    )
    return Check("possible_duplicates", "warning", reason, {"count": len(entries), "workspaces": names})


# Each takes (store, settings, now) and is reported under its name without "check_".
DATABASE_CHECKS = (
    check_workspace_addresses,
    check_workbook_passwords,
    check_duplicate_workspaces,
    check_export_folders,
    check_indexes,
    check_arrival_order,
    check_scheduled_runs,
    check_workspace_schedules,
    check_failed_exports,
    check_possible_duplicates,
)


def run_health(settings: Settings, *, smtp_login: bool = False) -> HealthReport:
    now = utc_now()
    report = HealthReport(checked_at=now)
    store: Store | None = None
    try:
        try:
            store = Store.open(settings)
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
        for check in DATABASE_CHECKS:
            name = check.__name__.removeprefix("check_")
            if store is None:
                report.checks.append(Check(name, "skipped", "Not checked: MongoDB is unreachable."))
                continue
            try:
                report.checks.append(check(store, settings, now))
            except PyMongoError as error:  # fails that check, not the whole report
                report.checks.append(Check(name, "failed", describe_mongo_error(error, settings)))

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
