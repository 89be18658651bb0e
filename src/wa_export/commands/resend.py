"""`wa-export resend LOG_ID`: email again exactly the workbook an export_logs entry recorded, its rows read over the
entry's recorded range as the export read them. It touches no cursor, lease or intent: scheduled delivery cannot notice."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from bson import ObjectId

from wa_export.clock import DatabaseClock
from wa_export.commands.logs import entry_facts
from wa_export.errors import ConfigError, ExitCode, SmtpNotConfigured, UnknownWorkspace, UsageProblem, WaExportError
from wa_export.export import email_text, results
from wa_export.export.delivery import describe_file_error, remove_files, write_workbook
from wa_export.export.rows import RowStats, rows_by_arrival, rows_by_timestamp
from wa_export.mail.errors import MailError
from wa_export.mail.message import check_sendable
from wa_export.mail.transport import MailSender
from wa_export.recipients import domain_refusal, parse_address_list
from wa_export.redaction import redact
from wa_export.settings import ID_FORM, Settings
from wa_export.store import logs
from wa_export.store.arrivals import ArrivalKey
from wa_export.store.connection import Store, Workspace, as_object_id, mongo_errors, open_store
from wa_export.units import count_noun
from wa_export.workbook.fingerprint import Fingerprint, fingerprint
from wa_export.workbook.naming import contested_slugs
from wa_export.workbook_password import workbook_password
from wa_export.workspace_settings import TIME_ZONE, in_zone, resolve


class NotResendable(WaExportError):
    """The entry does not exist, was never delivered, or cannot be rebuilt (exit 1)."""


def parse_log_id(raw: str) -> ObjectId:
    if (log_id := as_object_id(raw.strip())) is None:
        raise UsageProblem(f"{raw!r} is not an export id: expected {ID_FORM}, as `wa-export logs` shows them.")
    return log_id


def parse_to(to: Sequence[str], settings: Settings) -> tuple[str, ...]:
    """The --to addresses: plain addresses inside EXPORT_ALLOWED_EMAIL_DOMAINS, else UsageProblem (exit 2)."""
    try:
        addresses = parse_address_list(",".join(to), "--to")
    except ConfigError as error:
        raise UsageProblem(str(error)) from None
    refused = domain_refusal(addresses, settings.export_allowed_email_domains, "use an address in an allowed domain")
    if refused is not None:
        raise UsageProblem(f"--to: {refused}.")
    return addresses


def refusal(entry: logs.LedgerEntry) -> str | None:
    """Why this entry cannot be re-sent (one sentence), or None."""
    if entry.status in (logs.STATUS_FAILED, logs.STATUS_SENDING):
        return f"Export {entry.id} was never delivered (status {entry.status}), so there is nothing to re-send: the next scheduled run delivers its messages."
    if entry.status != logs.STATUS_COMPLETED:
        return f"Export {entry.id} has status {entry.status or '(none)'!r}: only a completed export can be re-sent."
    if entry.recorded_range is None:
        return f"Export {entry.id} records no range of messages (an export of the original service?), so it cannot be rebuilt; export that period with `wa-export export --workspace ID --since TIME --until TIME --email ADDRESS`."
    return None


def recipients_of(entry: logs.LedgerEntry, to: tuple[str, ...], settings: Settings) -> tuple[str, ...]:
    """--to (already checked), else the entry's own recipients, still under EXPORT_ALLOWED_EMAIL_DOMAINS."""
    if to:
        return to
    if not entry.recipients:
        raise NotResendable(f"Export {entry.id} records no recipient; pass --to ADDRESS.")
    fix = "pass --to with an address in an allowed domain"
    if (refused := domain_refusal(entry.recipients, settings.export_allowed_email_domains, fix)) is not None:
        raise NotResendable(f"The recipients of export {entry.id} are no longer allowed: {refused}.")
    return entry.recipients


@dataclass
class ResendResult:
    original: logs.LedgerEntry
    workspace_name: str
    recipients: tuple[str, ...]
    dry_run: bool
    message_count: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    subject: str | None = None
    file_path: str | None = None
    attachment: Fingerprint | None = None
    log_id: ObjectId | None = None  # the new entry (`trigger: "resend"`)
    error: str | None = None  # nothing was sent: why

    @property
    def count_difference(self) -> str | None:
        return email_text.count_difference(self.message_count, self.original.message_count)

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.error is None else ExitCode.FAILED

    def as_dict(self) -> dict[str, Any]:
        original, sha256 = self.original, None if self.attachment is None else self.attachment.sha256
        document = asdict(self) | {"original": entry_facts(original), "resend_of": str(original.id)}
        document |= {"workspace_id": original.workspace_id, "recorded_message_count": original.message_count}
        return document | {
            "attachment_sha256": sha256,
            "exit_code": self.exit_code,
            "count_difference": self.count_difference,
        }


def resend(settings: Settings, raw_id: str, to: Sequence[str], *, dry_run: bool = False) -> ResendResult:
    """Every argument is checked before MongoDB is asked anything."""
    log_id, override = parse_log_id(raw_id), parse_to(to, settings)
    try:
        check_sendable(settings)  # --dry-run too: it refuses what the real resend refuses
    except MailError as error:
        raise SmtpNotConfigured(str(error)) from None
    with open_store(settings) as store, mongo_errors(settings):
        entry = logs.entry_by_id(store.export_logs, log_id)
        if entry is None:
            store.require_workspaces_collection()  # a wrong MONGODB_DATABASE is exit 2, not "no such export"
            problem = f"No export has id {log_id} in database {settings.mongodb_database!r}; `wa-export logs` lists the recent exports with their ids."
            raise NotResendable(problem)
        if (reason := refusal(entry)) is not None:
            raise NotResendable(reason)
        recipients = recipients_of(entry, override, settings)
        try:
            [workspace] = store.workspaces_by_id([entry.workspace_id])
        except UnknownWorkspace:
            problem = (
                f"The workspace of export {entry.id} ({entry.workspace_id}) no longer exists, so its chats are unknown."
            )
            raise NotResendable(problem) from None
        zone = resolve(TIME_ZONE, workspace, settings)  # the workspace's own zone, as its exports are written
        if zone.value is None:
            raise NotResendable(zone.problem or "")
        result = ResendResult(entry, workspace.name, recipients, dry_run)
        _rebuild(in_zone(settings, zone.value), store, workspace, result)
        return result


def _rebuild(settings: Settings, store: Store, workspace: Workspace, result: ResendResult) -> None:
    """Rebuilt like a new export: encrypted with the workspace's password as it is now, refused without a required one."""
    entry, span = result.original, result.original.recorded_range
    assert span is not None  # refusal() said so
    clock = DatabaseClock(store.database_now())
    export_time = entry.export_time or clock.started_at  # the original's subject and file name
    password = workbook_password(workspace, settings)
    if password.problem is not None:
        result.error = password.problem[:1].upper() + password.problem[1:]
        return
    stats = RowStats()
    if span.kind == "timestamp":
        assert isinstance(span.low, datetime) and isinstance(span.high, datetime)
        rows = rows_by_timestamp(store, workspace, span.low, span.high, stats)
    else:
        # An ObjectId range is `_id` whatever the setting says now; dates need the configured date field.
        key = ArrivalKey("_id") if isinstance(span.low, ObjectId) else ArrivalKey(settings.export_arrival_field)
        if not key.usable(span.low):
            problem = f"Export {entry.id} recorded arrival dates, but EXPORT_ARRIVAL_FIELD is now _id: set it back to the date field it was exported with to re-send it."
            raise NotResendable(problem)
        rows = rows_by_arrival(store, key, workspace, span.low, span.high, stats)
    try:
        slugs = contested_slugs((active.name, active.id) for active in store.active_workspaces())
        path = None if result.dry_run else write_workbook(settings, workspace, rows, export_time, slugs, password.value)
    except OSError as error:
        result.error = describe_file_error(error, settings.export_dir)
        return
    deque(rows, maxlen=0)  # a dry run counts the rows and writes none
    result.message_count, result.by_status = stats.total, stats.counts()[0]
    if path is None:
        if not result.dry_run:
            result.error = f"Export {entry.id} held {count_noun(entry.message_count, 'message')} and none of them exists any more (deleted, or their chats moved to another workspace): nothing was sent."
        return
    # The copy keeps the original's name: a re-sent file reaches the recipient as the one they miss.
    attached_name = entry.file_name or path.name
    result.file_path, result.attachment = str(path), replace(fingerprint(path), file_name=attached_name)
    window = (entry.window_start or export_time, entry.window_end or export_time)
    resent = email_text.Resent(export_time, entry.message_count, attached_name)
    mail = email_text.compose_export_mail(
        settings,
        workspace,
        export_time,
        window,
        result.by_status,
        path,
        result.recipients,
        (entry.part or 1, entry.parts or 1),
        by_arrival=span.kind == "arrival",
        resent=resent,
        protected=password.value is not None,
    )
    result.subject = mail.subject
    try:
        with MailSender(settings) as sender:
            sender.send(mail)
    except MailError as error:
        remove_files([path])  # rebuilt on the next attempt; nothing to keep
        result.file_path, result.error = None, redact(str(error), settings.secrets())
        return
    result.log_id = ObjectId()
    record = logs.ExportEntry(
        workspace, result.recipients, results.new_run_id(), logs.TRIGGER_RESEND, clock.started_at, result.message_count,
        result.by_status, stats.counts()[1], entry.window_start, entry.window_end, str(path), entry.keys,
        entry.part, entry.parts, result.attachment, resend_of=entry.id,
    )  # fmt: skip
    logs.insert_export(store.export_logs, record, clock.now(), status=logs.STATUS_COMPLETED, log_id=result.log_id)
