"""The export run: workspaces → windows → workbook → email → logs (SPEC §5).

Scheduled runs take a lease per workspace, export `[watermark, now - lag)` and
move the watermark only after the email was accepted. Manual runs export the
window the operator asked for and never touch the watermark. The library
reports through an observer and returns results; it never prints.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, Protocol

from pymongo.errors import ConnectionFailure, PyMongoError

from wa_export.clock import utc_now
from wa_export.errors import ExitCode, MongoUnavailable, SmtpNotConfigured
from wa_export.export.preflight import RunWarning, require_workspaces_collection
from wa_export.export.rows import RowStats, message_rows
from wa_export.export.status import STATUSES
from wa_export.export.workers import slot_share
from wa_export.mail.errors import RUN_FATAL_STEPS, MailError
from wa_export.mail.message import OutgoingMail, check_sendable, single_line_or
from wa_export.mail.sender import MailSender
from wa_export.recipients import Recipients, missing_hint, option_recipients, recipients_for
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store.connection import (
    SERVICE_NAME,
    Store,
    Workspace,
    describe_mongo_error,
)
from wa_export.store.export_state import (
    Lease,
    LeaseLost,
    Window,
    acquire_lease,
    read_watermark,
    scheduled_window,
)
from wa_export.workbook.naming import (
    contested_slugs,
    publish_path_candidates,
    slugify,
    workspace_folder,
)
from wa_export.workbook.writer import WorkbookWriter

Trigger = Literal["scheduled", "manual"]
ORPHANS_NOT_COUNTED = "orphaned messages not counted (create the index {timestamp: 1} on messages to count them)"
RUN_FATAL_MAIL_STEPS = RUN_FATAL_STEPS  # the mail package decides which failures end a run's sending
Outcome = Literal["completed", "no_messages", "skipped", "failed", "written", "dry_run"]


@dataclass(frozen=True)
class ExportRequest:
    """What the operator asked for; see `is_manual` for the scheduled/manual split of SPEC §4."""

    workspace_ids: tuple[str, ...] = ()
    window: Window | None = None  # manual window; None for scheduled runs
    email_override: tuple[str, ...] = ()
    send_email: bool = True
    dry_run: bool = False
    # `--workers N`: this process exports only share k of N of the workspaces (workers.slot_share).
    worker_slot: tuple[int, int] | None = None

    @property
    def is_manual(self) -> bool:
        return self.window is not None or bool(self.email_override)

    @property
    def trigger(self) -> Trigger:
        return "manual" if self.is_manual else "scheduled"

    @property
    def moves_watermark(self) -> bool:
        return not self.is_manual and self.send_email and not self.dry_run


@dataclass
class WorkspaceResult:
    workspace_id: str
    workspace_name: str
    outcome: Outcome
    reason: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    message_count: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    file_path: str | None = None
    recipients: tuple[str, ...] = ()
    recipients_source: str = "none"  # recipients.RecipientSource

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "workspace_name": self.workspace_name,
            "outcome": self.outcome,
            "reason": self.reason,
            "window_start": _iso(self.window_start),
            "window_end": _iso(self.window_end),
            "message_count": self.message_count,
            "by_status": self.by_status,
            "anomalies": self.anomalies,
            "file_path": self.file_path,
            "recipients": list(self.recipients),
            "recipients_source": self.recipients_source,
        }


@dataclass
class RunResult:
    run_id: str
    trigger: Trigger
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    workspaces: list[WorkspaceResult] = field(default_factory=list)
    orphaned_messages: int | None = 0  # None: not counted (no timestamp index on messages)
    interrupted: bool = False
    warnings: list[RunWarning] = field(default_factory=list)  # see export/preflight.py

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.workspaces if result.outcome == outcome)

    @property
    def failed(self) -> bool:
        return self.interrupted or self.count("failed") > 0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failed else ExitCode.OK

    @property
    def message_count(self) -> int:
        return sum(result.message_count for result in self.workspaces)

    def anomaly_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for result in self.workspaces:
            for name, count in result.anomalies.items():
                totals[name] = totals.get(name, 0) + count
        if self.orphaned_messages:
            totals["orphaned_message"] = totals.get("orphaned_message", 0) + self.orphaned_messages
        return totals

    def summary(self) -> str:
        return summary_line(
            f"{self.trigger} export run{' (dry run)' if self.dry_run else ''}: {len(self.workspaces)} workspaces",
            self.count,
            self.message_count,
            self.anomaly_totals(),
            self.interrupted,
            [] if self.orphaned_messages is not None else [ORPHANS_NOT_COUNTED],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "message_count": self.message_count,
            "orphaned_messages": self.orphaned_messages,
            "anomalies": self.anomaly_totals(),
            "summary": self.summary(),
            "workspaces": [result.as_dict() for result in self.workspaces],
            "warnings": [warning.as_dict() for warning in self.warnings],
        }


def summary_line(
    header: str,
    count: Callable[[Any], int],
    message_count: int,
    anomalies: dict[str, int],
    interrupted: bool,
    problems: Sequence[str] = (),
) -> str:
    """The one-line run summary shared by single runs and `--workers` runs."""
    parts = [
        header,
        f"{count('completed')} emailed",
        f"{count('written')} written",
        f"{count('no_messages')} without new messages",
        f"{count('skipped')} skipped",
        f"{count('failed')} failed",
        f"{message_count} messages",
        *problems,
    ]
    if anomalies:
        parts.append("data issues: " + ", ".join(f"{number} {name}" for name, number in sorted(anomalies.items())))
    if interrupted:
        parts.append("interrupted before finishing")
    return ", ".join(parts)


class RunObserver(Protocol):
    """What the run reports while it works (the CLI draws progress from it).

    ``messages_exported(workspace_id, count)`` is optional for an observer: the
    run calls it, when the observer has it, as rows are written (``count`` = the
    messages of that workspace written since the previous call, not a total).
    """

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None: ...

    def workspace_finished(self, result: WorkspaceResult) -> None: ...


class SilentObserver:
    """Reports nothing: for --json runs and library callers."""

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        return None

    def messages_exported(self, workspace_id: str, count: int) -> None:
        return None

    def workspace_finished(self, result: WorkspaceResult) -> None:
        return None


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def new_run_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def format_local(moment: datetime, settings: Settings, with_seconds: bool = False) -> str:
    local = moment.astimezone(settings.export_timezone)
    return local.strftime("%Y-%m-%d %H:%M:%S" if with_seconds else "%Y-%m-%d %H:%M")


def compose_export_mail(
    settings: Settings, workspace: Workspace, result: WorkspaceResult, run_time: datetime, file_path: Path
) -> OutgoingMail:
    zone = settings.timezone_name
    assert result.window_start is not None and result.window_end is not None
    status_lines = "\n".join(f"  {status}: {result.by_status.get(status, 0)}" for status in result.by_status)
    body = (
        "WhatsApp messages export\n"
        "\n"
        f"Workspace: {workspace.name or '(unnamed)'} ({workspace.id})\n"
        f"Window start: {format_local(result.window_start, settings, True)} {zone}\n"
        f"Window end: {format_local(result.window_end, settings, True)} {zone} (exclusive)\n"
        f"Total messages: {result.message_count}\n"
        f"By status:\n{status_lines}\n"
        f"File: {file_path.name}\n"
        "\n"
        "Sent automatically by wa-export.\n"
    )
    name = single_line_or(workspace.name, workspace.id)
    subject = f"WhatsApp Messages Export - {name} - {format_local(run_time, settings)}"
    return OutgoingMail(to=result.recipients, subject=subject, body=body, attachment=file_path)


class ExportRun:
    """One invocation of `wa-export export`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        request: ExportRequest,
        observer: RunObserver | None = None,
        stop_requested: threading.Event | None = None,
        mailer_factory: Callable[[Settings], MailSender] = MailSender,
    ) -> None:
        self.settings = settings
        self.store = store
        self.request = request
        self.observer = observer or SilentObserver()
        self.stop_requested = stop_requested or threading.Event()
        self.mailer_factory = mailer_factory
        self.now = utc_now()
        self.result = RunResult(
            run_id=new_run_id(), trigger=request.trigger, dry_run=request.dry_run, started_at=self.now
        )
        self._mailer: MailSender | None = None
        # A connect/TLS/login failure will fail every later email of the run the
        # same way: remember it instead of hammering the server (and the
        # account's lockout counter) once per workspace.
        self._fatal_mail_error: str | None = None
        # Slugs of more than one active workspace: nobody adopts their unmarked folder.
        self._contested_slugs: frozenset[str] = frozenset()

    # --- the run ---------------------------------------------------------------

    def execute(self) -> RunResult:
        if self.request.send_email and not self.request.dry_run:
            try:
                check_sendable(self.settings)
            except MailError as error:
                raise SmtpNotConfigured(str(error)) from None
        try:
            workspaces = self._select_workspaces()
            self.observer.run_started(len(workspaces), self.request.trigger)
            try:
                for workspace in workspaces:
                    if self.stop_requested.is_set():
                        self.result.interrupted = True
                        break
                    outcome = self.export_workspace(workspace)
                    self.result.workspaces.append(outcome)
                    self.observer.workspace_finished(outcome)
            finally:
                self._close_mailer()
            if self.request.moves_watermark and self._counts_orphans():
                self.result.orphaned_messages = self._count_orphans()
            self.result.finished_at = utc_now()
            if not self.request.dry_run:
                self._record_run_event()
        except ConnectionFailure as error:
            raise MongoUnavailable(describe_mongo_error(error, self.settings)) from None
        return self.result

    def _select_workspaces(self) -> list[Workspace]:
        if self.request.workspace_ids:
            selected = self.store.workspaces_by_id(self.request.workspace_ids)
            active = self.store.active_workspaces()  # one read per run, for folder adoption
        else:
            selected = active = self.store.active_workspaces()
            if not selected:
                require_workspaces_collection(self.store)  # a wrong MONGODB_DATABASE is exit 2, not "0 workspaces"
        # From every active workspace, before --workers takes its share.
        self._contested_slugs = contested_slugs((w.name, w.id) for w in active)
        return slot_share(selected, self.request.worker_slot)

    def _counts_orphans(self) -> bool:
        # One process per run counts (worker 0 of --workers); a filtered run does not.
        slot = self.request.worker_slot
        return not self.request.workspace_ids and (slot is None or slot[0] == 0)

    def _count_orphans(self) -> int | None:
        """Messages of the newest interval whose chat is gone, or None when that cannot be cheap.

        Orphans belong to no workspace, so no chat-bounded query finds them; the
        count needs a timestamp-led index on messages, without which it would
        scan the collection. Then it is skipped and the summary says so.
        """
        windows = [(r.window_start, r.window_end) for r in self.result.workspaces if r.window_start and r.window_end]
        if not windows:
            return 0
        end = max(window_end for _, window_end in windows)
        # No watermark tracks orphans: look at the newest interval only. That
        # bounds the query's cost even when a failing workspace drags an old
        # watermark, and counts each orphan about once.
        start = max(
            min(window_start for window_start, _ in windows),
            end - timedelta(minutes=self.settings.export_interval_minutes),
        )
        try:
            if not self.store.has_timestamp_index():
                return None
            return self.store.orphaned_message_count(start, end)
        except PyMongoError as error:
            if isinstance(error, ConnectionFailure):
                raise
            return None  # a diagnostic count must never fail a run whose mails went out

    # --- one workspace -----------------------------------------------------------

    def export_workspace(self, workspace: Workspace) -> WorkspaceResult:
        result = WorkspaceResult(workspace.id, workspace.name, "skipped")
        if not self.request.is_manual and workspace.status != "active":
            result.reason = f"workspace status is {workspace.status!r}, only active workspaces are exported on schedule"
            return result
        recipients = self._recipients(workspace)
        if self.request.send_email and not self.request.dry_run and not recipients.addresses and not recipients.problem:
            result.reason = (
                f"no email address configured: {missing_hint(workspace.id, self.settings)}"
                + (" or pass --email" if self.request.is_manual else "")
            )
            # Only a workspace the operator named is a failure; a run over all of
            # them skips the unconfigured ones, as a scheduled run does.
            if self.request.is_manual and self.request.workspace_ids:
                result.outcome = "failed"
            return result
        result.recipients, result.recipients_source = recipients.addresses, recipients.source

        lease: Lease | None = None
        if self.request.moves_watermark:
            lease = acquire_lease(
                self.store.export_state,
                workspace.id,
                self.result.run_id,
                timedelta(seconds=self.settings.lease_seconds),
            )
            if lease is None:
                result.reason = "another wa-export run holds this workspace's lease"
                return result
        try:
            return self._export_window(workspace, result, lease, recipients.problem)
        except ConnectionFailure:
            raise  # MongoDB is gone: the whole run stops (exit 3)
        except (PyMongoError, LeaseLost) as error:
            result.outcome = "failed"
            text = f"{error}; nothing was sent" if isinstance(error, LeaseLost) else f"MongoDB error: {error}"
            result.reason = redact(text, self.settings.secrets())
            self._log_export_quietly(workspace, result)
            return result
        except Exception as error:  # one broken workspace must not stop the others
            result.outcome = "failed"
            result.reason = redact(f"internal error ({type(error).__name__}: {error})", self.settings.secrets())
            self._log_export_quietly(workspace, result)
            return result
        finally:
            if lease is not None:
                try:
                    lease.release()
                except ConnectionFailure:
                    pass  # it expires by itself; the connection error surfaces elsewhere

    def _recipients(self, workspace: Workspace) -> Recipients:
        if self.request.email_override:
            return option_recipients(self.request.email_override)
        return recipients_for(workspace, self.settings)

    def _window_for(self, workspace_id: str, lease: Lease | None) -> Window:
        if self.request.window is not None:
            return self.request.window
        # Dry runs and --no-email runs read the watermark but never take or move it.
        watermark = lease.watermark if lease is not None else read_watermark(self.store.export_state, workspace_id)
        return scheduled_window(
            watermark, self.now, self.settings.export_interval_minutes, self.settings.export_lag_seconds
        )

    def _export_window(
        self, workspace: Workspace, result: WorkspaceResult, lease: Lease | None, recipients_problem: str | None
    ) -> WorkspaceResult:
        window = self._window_for(workspace.id, lease)
        result.window_start, result.window_end = window.start, window.end
        if lease is not None and lease.watermark is None:
            # Pin the very first window's start now: if this run fails, the next
            # one must start here, not at its own "now - interval".
            lease.advance_watermark(window.start, succeeded=False)
        refusal = self._delivery_refusal(recipients_problem)
        if refusal is not None:
            # Refused before any work: the watermark stays, so the window is
            # delivered once the address or the SMTP problem is fixed.
            result.outcome = "failed"
            result.reason = refusal
            self._log_export_quietly(workspace, result)
            return result
        if window.is_empty:
            result.outcome = "no_messages"
            result.reason = "nothing new since the previous export (the window is empty)"
            return result

        chats = self.store.chats_of(workspace)
        stats = RowStats()
        messages = self.store.messages_in_window(chats.keys(), window.start, window.end)
        keep_lease = lease.renew_if_half_spent if lease is not None else None
        rows = message_rows(messages, chats, workspace.id, stats, keep_lease)

        if self.request.dry_run:
            for _ in rows:
                pass
            self._fill_counts(result, stats)
            result.outcome = "dry_run"
            return result

        try:
            file_path = self._write_workbook(workspace, rows)
        except OSError as error:
            self._fill_counts(result, stats)
            result.outcome = "failed"
            result.reason = _describe_file_error(error, self.settings.export_dir)
            self._log_export_quietly(workspace, result)
            return result
        self._fill_counts(result, stats)

        if file_path is None:
            result.outcome = "no_messages"
            if lease is not None:
                lease.advance_watermark(window.end, succeeded=True)
            return result
        result.file_path = str(file_path)

        if not self.request.send_email:
            result.outcome = "written"
            return result

        try:
            if lease is not None:
                lease.renew()  # never send for a window another run has taken over
            mail = compose_export_mail(self.settings, workspace, result, self.now, file_path)
            self._mailer_for_run().send(mail)
        except (MailError, LeaseLost) as error:
            result.outcome = "failed"
            result.reason = redact(str(error), self.settings.secrets())
            if isinstance(error, MailError) and error.step in RUN_FATAL_MAIL_STEPS:
                self._fatal_mail_error = result.reason
            self._log_export_quietly(workspace, result)
            return result

        result.outcome = "completed"
        # The mail is out: record it before moving the watermark, so a crash in
        # between shows up as a completed log with an unmoved watermark (one
        # duplicate next run) rather than a lost window.
        self._log_export(workspace, result)
        if lease is not None:
            try:
                lease.advance_watermark(window.end, succeeded=True)
            except LeaseLost as error:
                result.reason = f"emailed, but {error}; the next run may send this window again"
        return result

    def _delivery_refusal(self, recipients_problem: str | None) -> str | None:
        """Why this workspace's email cannot go out in this run, known before exporting."""
        if not self.request.send_email or self.request.dry_run:
            return None
        if recipients_problem is not None:
            return recipients_problem  # a malformed or disallowed address: this workspace only
        if self._fatal_mail_error is not None:
            return f"not attempted: an earlier email of this run failed the same way ({self._fatal_mail_error})"
        return None

    def _write_workbook(self, workspace: Workspace, rows: Any) -> Path | None:
        """Stream the rows into a new workbook; None (and no file, no folder) when there are none."""
        first = next(rows, None)
        if first is None:
            return None
        slug = slugify(workspace.name, workspace.id)
        adopt = workspace.status == "active" and slug not in self._contested_slugs
        folder = workspace_folder(self.settings.export_dir, slug, workspace.id, adopt_unmarked=adopt)
        local_run_time = self.now.astimezone(self.settings.export_timezone)
        candidates = iter(publish_path_candidates(folder, slug, local_run_time))
        final_path = next(candidates)
        with WorkbookWriter(final_path, self.settings.export_timezone) as writer:
            writer.append(*first)
            writer.append_many(rows)
            return writer.commit(itertools.chain([final_path], candidates))

    def _fill_counts(self, result: WorkspaceResult, stats: RowStats) -> None:
        result.message_count = stats.total
        result.by_status = {status: stats.by_status.get(status, 0) for status in STATUSES}
        for status, count in stats.by_status.items():
            if status not in STATUSES:
                result.by_status[status] = count
        result.anomalies = dict(stats.anomalies)

    # --- side effects ------------------------------------------------------------

    def _mailer_for_run(self) -> MailSender:
        # One SMTP connection for the whole run, opened on the first email.
        if self._mailer is None:
            self._mailer = self.mailer_factory(self.settings)
            self._mailer.__enter__()
        return self._mailer

    def _close_mailer(self) -> None:
        if self._mailer is not None:
            self._mailer.__exit__(None, None, None)
            self._mailer = None

    def _log_export(self, workspace: Workspace, result: WorkspaceResult) -> None:
        now = utc_now()
        self.store.export_logs.insert_one(
            {
                "workspace_id": workspace.id,
                "workspace_name": workspace.name,
                "export_type": "whatsapp_messages",
                "export_timestamp": self.now,
                "message_count": result.message_count,
                "file_path": result.file_path,
                "email_sent_to": ", ".join(result.recipients),
                "status": "completed" if result.outcome == "completed" else "failed",
                "error_message": result.reason if result.outcome != "completed" else None,
                "created_at": now,
                "updated_at": now,
                "window_start": result.window_start,
                "window_end": result.window_end,
                "trigger": self.request.trigger,
                "run_id": self.result.run_id,
                "by_status": result.by_status,
                "anomalies": result.anomalies,
            }
        )

    def _log_export_quietly(self, workspace: Workspace, result: WorkspaceResult) -> None:
        try:
            self._log_export(workspace, result)
        except PyMongoError as error:
            if isinstance(error, ConnectionFailure):
                raise

    def _record_run_event(self) -> None:
        run = self.result
        try:
            self.store.system_logs.insert_one(
                {
                    "event_type": "error" if run.failed else "success",
                    "message": run.summary(),
                    "timestamp": utc_now(),
                    "service": SERVICE_NAME,
                    "kind": "export_run",
                    "trigger": run.trigger,
                    "run_id": run.run_id,
                    "host": socket.gethostname(),
                    "started_at": run.started_at,
                    "finished_at": run.finished_at,
                    "workspaces": len(run.workspaces),
                    "completed": run.count("completed"),
                    "failed": run.count("failed"),
                    "skipped": run.count("skipped"),
                    "no_messages": run.count("no_messages"),
                    "message_count": run.message_count,
                    "anomalies": run.anomaly_totals(),
                    "orphaned_messages": run.orphaned_messages,
                    # health counts only runs that would keep every workspace current
                    "moves_watermark": self.request.moves_watermark,
                    "all_workspaces": not self.request.workspace_ids,
                    "interrupted": run.interrupted,
                }
            )
        except PyMongoError as error:
            if isinstance(error, ConnectionFailure):
                raise
            # The run's work is done and logged per workspace; a refused summary
            # write must not turn a good run into a failure.


def _describe_file_error(error: OSError, export_dir: Path) -> str:
    import errno

    where = error.filename or export_dir
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full while writing {where}; free space in EXPORT_DIR ({export_dir}) — no partial file was kept"
    if error.errno == errno.EFBIG:
        return (
            f"the export file grew past this process's file-size limit (ulimit -f) while writing {where}; "
            f"raise the limit for wa-export or export a shorter period (EXPORT_DIR {export_dir}) — no partial file was kept"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {where} ({error.strerror}); make EXPORT_DIR ({export_dir}) writable by this user"
    if error.errno == errno.ENOTDIR:
        return (
            f"cannot create the export folder {where} ({error.strerror}): a regular file is in the way; "
            f"point EXPORT_DIR ({export_dir}) at a directory"
        )
    return f"cannot write the export file in {where} ({error.strerror or error}); check EXPORT_DIR ({export_dir})"


def run_export(
    settings: Settings,
    store: Store,
    request: ExportRequest,
    observer: RunObserver | None = None,
    stop_requested: threading.Event | None = None,
) -> RunResult:
    return ExportRun(settings, store, request, observer, stop_requested).execute()


__all__: Sequence[str] = [
    "ExportRequest",
    "ExportRun",
    "RunResult",
    "SmtpNotConfigured",
    "WorkspaceResult",
    "run_export",
]
