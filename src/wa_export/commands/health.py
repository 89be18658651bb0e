"""`wa-export health`: one `Check` per question an operator asks, judged by the export's own rules (recipients.py,
workbook/naming.py) so it predicts the next run; any failed check exits 1."""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from contextlib import ExitStack, closing, suppress
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast, get_args

from pymongo.errors import PyMongoError

from wa_export import settings as rules
from wa_export import units
from wa_export.clock import as_utc, utc_now
from wa_export.errors import ExitCode, MongoUnavailable
from wa_export.export.results import run_warnings, unmatched_variable_warnings
from wa_export.mail.errors import MailError
from wa_export.mail.message import check_sendable
from wa_export.mail.transport import MailSender, tls_mode
from wa_export.recipients import SOURCE_LABELS, UNSENT_WITHOUT_ADDRESS, RecipientSource, missing_hint, recipients_for
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store import logs
from wa_export.store.arrivals import ArrivalKey, check_arrival_key
from wa_export.store.connection import SERVICE_NAME, Store, Workspace, describe_mongo_error
from wa_export.store.state import count_cursors_ahead, count_foreign_cursors, last_successes, read_states
from wa_export.units import NAMES_SHOWN, count_noun, format_ago, format_bytes, has, is_, local_time, named
from wa_export.workbook.naming import FOLDER_MARKER, slugify, unclaimed_folders
from wa_export.workbook_password import workbook_password
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, overdue_since, resolve

CheckStatus = Literal["ok", "warning", "failed", "skipped"]
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
        return sum(check.status == status for check in self.checks)

    @property
    def status(self) -> CheckStatus:
        return "failed" if self.count("failed") else "warning" if self.count("warning") else "ok"

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.count("failed") else ExitCode.OK

    def summary(self) -> str:
        counts = {status: self.count(status) for status in get_args(CheckStatus)}  # "skipped" only when some were
        return f"health {self.status}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n or s != "skipped")

    def as_dict(self) -> dict[str, Any]:
        verdict = {"ok": self.exit_code == ExitCode.OK, "status": self.status, "exit_code": self.exit_code}
        return verdict | {"checked_at": None, "summary": self.summary(), "recorded": None} | asdict(self)


# Reasons embed texts from elsewhere (driver errors, stored errors, names): no doubled punctuation.
def clause(text: str) -> str:
    return text.strip().rstrip(".;: ")


def sentence(clauses: list[str]) -> str:
    """Clauses joined with "; " into one sentence with one capital and one final period; empty ones left out."""
    text = "; ".join(clause(part) for part in clauses if clause(part))
    return (text[:1].upper() + text[1:] + ".") if text else ""


def _label(workspace: Workspace) -> str:
    return units.workspace_label(workspace.name, workspace.id)


def _ref(workspace: Workspace, **facts: Any) -> dict[str, Any]:
    return {"id": workspace.id, "name": workspace.name, **facts}


def check_smtp(settings: Settings, login: bool) -> list[Check]:
    """The SMTP settings; with `login`, also a connection that starts TLS and logs in."""
    try:
        check_sendable(settings)
    except MailError as error:
        untried = Check("smtp_login", "failed", "Not tried: the SMTP settings are incomplete (see smtp_settings).")
        return [Check("smtp_settings", "failed", str(error)), *([untried] if login else [])]
    mode, user, server = tls_mode(settings), settings.smtp_username, f"{settings.smtp_server}:{settings.smtp_port}"
    where = f"{server}, {mode}, {f'login as {user}' if user else 'no login'}, from {settings.smtp_from}"
    note = " but SMTP_SECURITY=none sends passwords and exports unencrypted" if mode == "none" else ""
    checks = [Check("smtp_settings", "warning" if note else "ok", f"SMTP settings complete ({where}){note}.")]
    try:
        if login:
            with MailSender(settings) as sender:
                sender.verify_login()
            who = f" as {user}" if user else ""
            checks.append(Check("smtp_login", "ok", f"Connected to {server} over {mode} and logged in{who}."))
    except MailError as error:
        checks.append(Check("smtp_login", "failed", str(error), {"step": error.step}))
    return checks


def check_export_dir(export_dir: Path) -> Check:
    """Writable (or creatable) with free space: a probe file, as os.access() lies to root and on read-only mounts."""
    existing = next(path for path in (export_dir, *export_dir.parents) if path.exists() or path == path.parent)
    if not existing.is_dir():
        return Check("export_dir", "failed", rules.export_dir_not_a_directory(export_dir, existing))
    try:
        tempfile.TemporaryFile(dir=existing).close()  # 0600, removed at once
    except OSError as error:
        where = export_dir if existing == export_dir else f"{existing} (EXPORT_DIR {export_dir} does not exist yet)"
        reason = f"Cannot write in {where} ({error.strerror or error}); make it writable for wa-export's user."
        return Check("export_dir", "failed", reason)
    usage = shutil.disk_usage(existing)
    created = f"{export_dir} does not exist yet and can be created in {existing}"
    state = f"{export_dir} is writable" if existing == export_dir else created
    free = f"{format_bytes(usage.free)} free of {format_bytes(usage.total)}"
    details = {"path": str(export_dir), "free_bytes": usage.free, "total_bytes": usage.total}  # for a monitor
    if usage.free < MIN_FREE_BYTES or (usage.total and usage.free / usage.total < MIN_FREE_FRACTION):
        reason = f"{state}, but only {free}; free space or run `wa-export cleanup`."
        return Check("export_dir", "warning", reason, details)
    return Check("export_dir", "ok", f"{state}; {free}.", details)


def check_workspace_addresses(store: Store, settings: Settings, now: datetime) -> Check:
    active = store.active_workspaces()  # a database without a workspaces collection ends health: exit 2
    if not active:
        warnings = run_warnings(settings, [], covers_all_active=True)
        return Check("workspace_addresses", "warning", sentence([warning.message for warning in warnings]))
    found = {w.id: recipients_for(w, settings) for w in active}
    # A workspace whose schedule is off is exported by hand only: it needs no address.
    missing = [w for w in active if found[w.id].source == "none" and str(resolve(SCHEDULE, w, settings).value) != "off"]
    refused = [w for w in active if found[w.id].problem]
    unmatched = [u for u in unmatched_variable_warnings(settings, found) if u.workspace_id is not None]
    stray = [warning.variable for warning in unmatched if warning.variable]
    malformed = list(settings.malformed_workspace_variables)
    listed: tuple[RecipientSource, ...] = ("environment", "database", "none")
    sources = {source: sum(r.source == source for r in found.values()) for source in listed}
    details: dict[str, Any] = {"sources": sources, "workspaces": [_ref(w, **found[w.id].as_dict()) for w in active]}
    details["missing"] = [_ref(w) for w in missing]
    details["refused"] = [_ref(w, problem=found[w.id].problem) for w in refused]
    details["invalid"] = [ref for ref in details["refused"] if found[ref["id"]].problem_kind == "invalid"]
    details["configured_for_unknown_or_inactive"] = [warning.workspace_id for warning in unmatched]
    details["malformed_variables"] = malformed
    origin = {"environment": "WORKSPACE_<ID>_EMAIL", "database": settings.export_recipients_field}
    where = ", ".join(f"{sources[s]} from the {SOURCE_LABELS[s]} {origin.get(s)}" for s in listed[:2] if sources[s])
    lacking = f"{count_noun(len(missing), 'active workspace')} of {len(active)} {has(len(missing))} no address and {is_(len(missing))} not exported: {named([_label(w) for w in missing], 1)}; {missing_hint('<ID>', settings)} for each; {UNSENT_WITHOUT_ADDRESS}"
    problems = [lacking] if missing else []
    if refused:
        refusal = f"{count_noun(len(refused), 'workspace')} fail{'s' if len(refused) == 1 else ''} every export for a refused address, first {_label(refused[0])}: {clause(found[refused[0].id].problem or '')}"
        problems.append(refusal)
    notes = [rules.unmatched_variables_sentence(stray, settings.mongodb_database)] if stray else []
    notes += [rules.malformed_variables_sentence(malformed)] if malformed else []
    if problems:
        if where and not refused:  # refused addresses are among the sources: "the others" would be wrong
            problems.append(f"addresses of the others: {where}")
        return Check("workspace_addresses", "failed", sentence(problems + notes), details)
    all_have = f"All {len(active)} active workspaces have an address" + (f" ({where})" if where else "")
    if notes:
        return Check("workspace_addresses", "warning", sentence([f"{all_have}, but {notes[0]}", *notes[1:]]), details)
    return Check("workspace_addresses", "ok", f"{all_have}.", details)


def check_workbook_passwords(store: Store, settings: Settings, now: datetime) -> Check:
    active = store.active_workspaces()
    resolved = {w.id: workbook_password(w, settings) for w in active}
    refused = [w for w in active if resolved[w.id].problem is not None]
    encrypted = sum(password.value is not None for password in resolved.values())
    details: dict[str, Any] = {"workspaces": [_ref(w, **resolved[w.id].as_dict(secret=True)) for w in active]}
    details["refused"] = [_ref(w, problem=resolved[w.id].problem) for w in refused]
    counted = f"{encrypted} of {count_noun(len(active), 'active workspace')} get password-protected workbooks"
    if refused:
        reason = f"{count_noun(len(refused), 'workspace')} {is_(len(refused))} not exported for want of a usable workbook password: {named([_label(w) for w in refused])} (first: {resolved[refused[0].id].problem})"
        return Check("workbook_passwords", "failed", sentence([reason, counted]), details)
    required = "; EXPORT_REQUIRE_WORKBOOK_PASSWORD is true" if settings.export_require_workbook_password else ""
    return Check("workbook_passwords", "ok", f"{counted}{required}.", details)


def check_duplicate_workspaces(store: Store, settings: Settings, now: datetime) -> Check:
    if not (duplicates := store.stored_twice()):
        return Check("duplicate_workspaces", "ok", "Every workspace id is stored once.")
    facts = ("id_type", "name", "status")
    listed = [{"id": d.id, "documents": [dict(zip(facts, r, strict=True)) for r in d.documents]} for d in duplicates]
    reason = sentence([duplicate.sentence() for duplicate in duplicates])
    return Check("duplicate_workspaces", "warning", reason, {"workspaces": listed})


def check_export_folders(store: Store, settings: Settings, now: datetime) -> Check:
    """Folders without an owner marker (the original service's) that an export would adopt, or could not."""
    by_slug: dict[str, list[Workspace]] = {}
    for workspace in store.active_workspaces():
        by_slug.setdefault(slugify(workspace.name, workspace.id), []).append(workspace)
    try:
        unclaimed = unclaimed_folders(settings.export_dir, by_slug)
    except OSError as error:
        reason = f"Cannot inspect the folders in {settings.export_dir} ({error.strerror or error}); make EXPORT_DIR readable by the user that runs wa-export."
        return Check("export_folders", "warning", reason)
    contested = [slug for slug in unclaimed if len(by_slug[slug]) > 1]
    adoptable = [slug for slug in unclaimed if len(by_slug[slug]) == 1]
    folder = {slug: settings.export_dir / slug for slug in unclaimed}
    details: dict[str, Any] = {
        "to_adopt": [{"folder": str(folder[s]), "workspace": _ref(by_slug[s][0])} for s in adoptable]
    }
    details["contested"] = [{"folder": str(folder[s]), "workspaces": list(map(_ref, by_slug[s]))} for s in contested]
    adopters = [f"{s}/ by {_label(by_slug[s][0])}" for s in adoptable]
    adopt = f"{count_noun(len(adoptable), 'folder')} without an owner marker will be adopted by their workspace on its next export: {named(adopters)}"
    if contested:
        slug = contested[0]
        reason = f"{count_noun(len(contested), 'folder')} without an owner marker {is_(len(contested))} adopted by nobody because several active workspaces have their name: {named([f'{s}/' for s in contested])}; {folder[slug]} could belong to {named([_label(w) for w in by_slug[slug]])}, so each exports into its own {slug}_<id> folder; to give the folder to one of them, write that workspace's id into {folder[slug] / FOLDER_MARKER}"
        return Check("export_folders", "warning", reason + (f"; {adopt}." if adoptable else "."), details)
    reason = f"{adopt}." if adoptable else "Every workspace folder in EXPORT_DIR has its owner marker or is new."
    return Check("export_folders", "ok", reason, details)


def check_indexes(store: Store, settings: Settings, now: datetime) -> Check:
    if not (missing := store.missing_indexes()):
        return Check("indexes", "ok", "The supporting indexes on chats, messages and export_logs exist.")
    commands = [f"db.{c}.createIndex({{ {', '.join(f'{k}: {o}' for k, o in keys)} }})" for c, keys in missing]
    reason = "Supporting indexes are missing, so exports (and `verify`) scan whole collections; create them once: "
    return Check("indexes", "warning", reason + "; ".join(commands), {"commands": commands})


def check_arrival_order(store: Store, settings: Settings, now: datetime) -> Check:
    """The arrival key sees the messages (the probes a scheduled run makes), and no cursor is ahead of the clock."""
    key = ArrivalKey(settings.export_arrival_field)
    if (problem := check_arrival_key(store.messages, key).problem) is not None:
        return Check("arrival_order", "failed", problem)
    if foreign := count_foreign_cursors(store, key):  # scheduled runs refuse those workspaces (ArrivalKey.position)
        reason = f"{foreign} workspace cursor(s) were written while EXPORT_ARRIVAL_FIELD named another kind of field than {key.field!r} ({key.type_name}): scheduled runs refuse those workspaces until you set EXPORT_ARRIVAL_FIELD back or move each cursor with `wa-export state ID --move-to TIME`."
        return Check("arrival_order", "failed", reason, {"foreign_cursors": foreign})
    if ahead := count_cursors_ahead(store, key, now):
        reason = f"{ahead} workspace cursor(s) are ahead of the database clock (a clock was wrong when they were set); the next scheduled run pulls them back to its window end, which hides no message."
        return Check("arrival_order", "warning", reason)
    reason = f"Messages are ordered by {key.field}; no cursor is ahead of the database clock."
    return Check("arrival_order", "ok", reason)


def check_scheduled_runs(store: Store, settings: Settings, now: datetime) -> Check:
    threshold = timedelta(minutes=2 * settings.export_interval_minutes)
    hint = "check the crontab (`crontab -l`) or the systemd timer (`systemctl list-timers wa-export.timer`)"
    # Dry, --no-email and partial runs keep nothing current: no proof the schedule is alive.
    proving = {"kind": logs.EXPORT_RUN, "trigger": "scheduled", "moves_watermark": {"$ne": False}}
    proving["all_workspaces"] = {"$ne": False}
    latest = store.system_logs.find_one(proving, {"timestamp": 1}, sort=[("timestamp", -1)]) or {}
    if isinstance(last := latest.get("timestamp"), datetime):
        when = f"{local_time(last, settings, zoned=True)} ({format_ago(now - last)}"
        details = {"last_run": last, "threshold_minutes": 2 * settings.export_interval_minutes}  # for a monitor
        if now - last > threshold:
            reason = f"No scheduled run since {when}; EXPORT_INTERVAL_MINUTES is {settings.export_interval_minutes}); {hint}."
            return Check("scheduled_runs", "failed", reason, details)
        return Check("scheduled_runs", "ok", f"Last scheduled run {when}).", details)
    # A fresh install (wa-export first used moments ago) is a warning; weeks without a scheduled run are not.
    first = store.system_logs.find_one({"service": SERVICE_NAME}, {"timestamp": 1}, sort=[("timestamp", 1)]) or {}
    if isinstance(first_used := first.get("timestamp"), datetime) and now - as_utc(first_used) > threshold:
        since = f"{local_time(first_used, settings, zoned=True)} ({format_ago(now - as_utc(first_used))})"
        reason = f"No scheduled run recorded, although wa-export has been used here since {since}; {hint}."
        return Check("scheduled_runs", "failed", reason)
    reason = f"No scheduled run recorded yet (a new installation?); once the timer should be running, {hint}."
    return Check("scheduled_runs", "warning", reason)


def check_workspace_schedules(store: Store, settings: Settings, now: datetime) -> Check:
    """Stale: an hourly or daily workspace's slot unserved for longer than EXPORT_INTERVAL_MINUTES."""
    active = store.active_workspaces()
    timed = [(w, resolve(TIME_ZONE, w, settings), resolve(SCHEDULE, w, settings)) for w in active]
    invalid = [problem for _, zone, schedule in timed if (problem := zone.problem or schedule.problem)]
    # An invalid zone is one of `invalid`: the run fails that workspace without judging its slots.
    slotted = [(w, z.value, s.value) for w, z, s in timed if z.value and s.value and s.value.has_slots]
    states = read_states(store, [w.id for w, _, _ in slotted]) if slotted else {}
    stale: list[dict[str, Any]] = []
    late: list[str] = []
    for workspace, zone, schedule in slotted:
        assert zone is not None and schedule is not None
        state = states.get(workspace.id)
        since = overdue_since(schedule, zone, now, state.served if state is not None else None)
        if since is not None and now - since > timedelta(minutes=settings.export_interval_minutes):
            stale.append(_ref(workspace, schedule=str(schedule), slot_missed=since))
            when = f"since its slot at {local_time(since, settings, zoned=True)} ({format_ago(now - since)})"
            late.append(f"{_label(workspace)} ({schedule} in {zone.key}) has not been delivered {when}")
    schedules = dict(Counter(str(schedule.value or "invalid") for _, _, schedule in timed))
    details = {"schedules": schedules, "stale": stale, "invalid": len(invalid)}
    if problems := late + invalid:
        more = f" ({len(problems) - NAMES_SHOWN} more in the details)" if len(problems) > NAMES_SHOWN else ""
        hint = f"`wa-export state` shows each workspace's schedule and next delivery{more}"
        return Check("workspace_schedules", "failed", sentence([*problems[:NAMES_SHOWN], hint]), details)
    reason = f"{count_noun(len(active), 'active workspace')} on schedule, {len(slotted)} of them hourly or daily."
    return Check("workspace_schedules", "ok", reason, details)


def check_failed_exports(store: Store, settings: Settings, now: datetime) -> Check:
    failed = {"status": logs.STATUS_FAILED, "created_at": {"$gte": now - FAILED_EXPORTS_LOOKBACK}}
    last = {"name": {"$last": "$workspace_name"}, "last_error": {"$last": "$error_message"}}
    group = {"_id": "$workspace_id", "failures": {"$sum": 1}, "last_failed_at": {"$max": "$created_at"}, **last}
    found = store.export_logs.aggregate([{"$match": failed}, {"$sort": {"created_at": 1}}, {"$group": group}])
    failures = [{"id": f.pop("_id"), **f} for f in found]
    for failure in failures:  # the stored error without secrets, cut
        error = redact(str(failure.get("last_error") or ""), settings.secrets())[:300]
        failure.update(name=failure.get("name") or "", last_error=error)
    if not failures:
        return Check("failed_exports", "ok", "No failed exports in the last 24 hours.")
    # Recovered: a later completed export (not a resend), or a later run with nothing new (only last_success_at).
    failed_at = {str(f["id"]): f["last_failed_at"] for f in failures}
    earliest = min(failed_at.values())
    completed: dict[str, Any] = {"status": logs.STATUS_COMPLETED, "trigger": {"$ne": logs.TRIGGER_RESEND}}
    completed |= {"workspace_id": {"$in": [f["id"] for f in failures]}, "created_at": {"$gte": earliest}}
    newest = {"$group": {"_id": "$workspace_id", "last_ok": {"$max": "$created_at"}}}
    successes = [(str(g["_id"]), g["last_ok"]) for g in store.export_logs.aggregate([{"$match": completed}, newest])]
    successes += last_successes(store, list(failed_at), earliest).items()
    recovered_ids = {key for key, moment in successes if as_utc(moment) > failed_at[key]}
    failures.sort(key=lambda f: str(f["name"]))
    recovered = [f for f in failures if str(f["id"]) in recovered_ids]
    still = [f for f in failures if str(f["id"]) not in recovered_ids]
    labels = [f"{f['name'] or '(unnamed)'} ({f['id']}, {f['failures']}x)" for f in still + recovered]
    total = sum(f["failures"] for f in failures)
    details = {"failed_exports": total, "still_failing": still, "recovered": recovered}
    counted = f"{count_noun(total, 'failed export')} in the last 24 hours"
    if still:
        error = clause(still[0]["last_error"])
        first = f"{count_noun(len(still), 'workspace')} still failing, first {labels[0]}{f': {error}' if error else ''}"
        since = f"{count_noun(len(recovered), 'workspace')} recovered since" if recovered else ""
        reason = sentence([f"{counted}; {first}", since, "`wa-export logs --status failed` shows every error"])
        return Check("failed_exports", "failed", reason, details)
    reason = sentence([f"{counted}, all delivered by a later run: {named(labels, 1)}"])
    return Check("failed_exports", "warning", reason, details)


def check_possible_duplicates(store: Store, settings: Settings, now: datetime) -> Check:
    recent = {"possible_duplicate": True, "created_at": {"$gte": now - FAILED_EXPORTS_LOOKBACK}}
    if not (entries := logs.latest_entries(store.export_logs, recent, 100)):
        return Check("possible_duplicates", "ok", "No email in the last 24 hours may have repeated an earlier one.")
    names = list(dict.fromkeys(units.workspace_label(e.workspace_name, e.workspace_id) for e in entries))
    last = entries[0].created_at
    when = f"; the latest at {local_time(last, settings, zoned=True)}" if last is not None else ""
    reason = f"{len(entries)} email(s) in the last 24 hours may repeat messages of an earlier one (an earlier run's outcome was unknown; each such email says so): {named(names)}{when}. `wa-export logs` marks them possible_duplicate."
    return Check("possible_duplicates", "warning", reason, {"workspaces": names})


# Each takes (store, settings, now) and is reported, in this order, under its name without "check_".
DATABASE_CHECKS = [check_workspace_addresses, check_workbook_passwords, check_duplicate_workspaces]
DATABASE_CHECKS += [check_export_folders, check_indexes, check_arrival_order, check_scheduled_runs]
DATABASE_CHECKS += [check_workspace_schedules, check_failed_exports, check_possible_duplicates]


def run_health(settings: Settings, *, smtp_login: bool = False) -> HealthReport:
    report = HealthReport(checked_at=utc_now())
    now, store = report.checked_at, cast("Store | None", None)
    with ExitStack() as open_connections:
        try:
            store = open_connections.enter_context(closing(Store.open(settings)))
            report.checks.append(Check("mongodb", "ok", f"Reachable; database {settings.mongodb_database!r}."))
            with suppress(MongoUnavailable):  # the database's clock, the one the runs write their times on
                now = store.database_now()
        except MongoUnavailable as error:
            report.checks.append(Check("mongodb", "failed", str(error)))
        report.checks += [*check_smtp(settings, smtp_login), check_export_dir(settings.export_dir)]
        skipped = "Not checked: MongoDB is unreachable."
        for check in DATABASE_CHECKS:
            name = check.__name__.removeprefix("check_")
            try:
                report.checks.append(check(store, settings, now) if store else Check(name, "skipped", skipped))
            except PyMongoError as error:  # fails that check, not the whole report
                report.checks.append(Check(name, "failed", describe_mongo_error(error, settings)))
        if store is not None:
            checks = [{"name": c.name, "status": c.status, "reason": c.reason} for c in report.checks]
            with suppress(PyMongoError):  # the report itself is still printed; a refused log write is no health failure
                details = {"status": report.status, "checks": checks}
                logs.record_health_check(store.system_logs, report.summary(), utc_now(), details)
                report.recorded = True
    return report
