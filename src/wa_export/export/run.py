"""The export run, from the operator's options to its result: plan, deliver, record (docs/design.md)."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections import deque
from collections.abc import Sequence
from datetime import timedelta
from functools import partial
from pathlib import Path

from pymongo.errors import ConnectionFailure

from wa_export.clock import DatabaseClock, Window, parse_time, utc_now
from wa_export.errors import ConfigError, MongoUnavailable, SmtpNotConfigured, UsageProblem
from wa_export.export import workers
from wa_export.export.delivery import (
    deliver,
    describe_file_error,
    log_export,
    unless_connection_lost,
    workspace_error,
    write_workbook,
)
from wa_export.export.email_text import compose_export_mail
from wa_export.export.plan import CURSOR_AHEAD, NOTHING_NEW, WorkItem, make_plan
from wa_export.export.results import (
    NO_ADDRESS,
    ExportRequest,
    MailSession,
    RunContext,
    RunObserver,
    RunResult,
    RunWarning,
    SilentObserver,
    WorkspaceResult,
    new_run_id,
    run_warnings,
)
from wa_export.export.rows import RowStats, rows_by_timestamp
from wa_export.mail.errors import MailError
from wa_export.mail.message import check_sendable
from wa_export.recipients import missing_hint, outside_allowed_domains, parse_address_list
from wa_export.settings import Settings
from wa_export.store import logs
from wa_export.store.arrivals import ArrivalKey, time_of
from wa_export.store.connection import Store, Workspace, describe_mongo_error, mongo_errors, open_store
from wa_export.store.state import advance_idle
from wa_export.workbook.fingerprint import Fingerprint, fingerprint
from wa_export.workbook.naming import contested_slugs
from wa_export.workspace_settings import TIME_ZONE, resolve

DEFAULT_MANUAL_WINDOW = timedelta(hours=24)  # a manual run without --hours or --since


def build_export_request(
    settings: Settings,
    *,
    workspace_ids: Sequence[str] = (),
    hours: float | None = None,
    since: str | None = None,
    until: str | None = None,
    email: Sequence[str] = (),
    no_email: bool = False,
    dry_run: bool = False,
) -> ExportRequest:
    """Turn `export` options into a request; any option of the manual set makes it manual."""
    if email and no_email:
        raise UsageProblem("--email and --no-email contradict each other; use one of them.")
    if hours is not None and since is not None:
        raise UsageProblem("--hours and --since both set the window start; use one of them.")
    if hours is not None and not (0 < hours <= 24 * 366):
        raise UsageProblem(f"--hours must be greater than 0 and at most a year, got {hours:g}.")
    overrides: tuple[str, ...] = ()
    if email:
        try:
            overrides = parse_address_list(",".join(email), "--email")
        except ConfigError as error:
            raise UsageProblem(str(error)) from None
        if refused := outside_allowed_domains(overrides, settings.export_allowed_email_domains):
            raise UsageProblem(
                f"--email {', '.join(refused)} is outside EXPORT_ALLOWED_EMAIL_DOMAINS "
                f"({', '.join(settings.export_allowed_email_domains)}); use an address in an allowed domain."
            )
    window: Window | None = None
    if hours is not None or since is not None or until is not None or overrides:
        zone = settings.export_timezone
        end = parse_time(until, "--until", zone) if until else utc_now()
        start = end - DEFAULT_MANUAL_WINDOW if hours is None else end - timedelta(hours=hours)
        window = Window(parse_time(since, "--since", zone) if since is not None else start, end)
        if window.is_empty:
            raise UsageProblem("The window is empty: --since must be before --until.")
    return ExportRequest(tuple(workspace_ids), window, overrides, send_email=not no_email, dry_run=dry_run)


def apply_worker_options(request: ExportRequest, count: int, worker_slot: str | None) -> ExportRequest:
    """Validate --workers / the hidden --worker-slot (WorkerUsageError: exit 2) and attach the slot to the request."""
    workers.check_request(count, is_manual=request.is_manual)
    if worker_slot is None:
        return request
    workers.check_slot_request(request.is_manual)
    return dataclasses.replace(request, worker_slot=workers.parse_worker_slot(worker_slot))


def export(
    settings: Settings, request: ExportRequest, observer: RunObserver | None = None, stop: threading.Event | None = None
) -> RunResult:
    with open_store(settings) as store, mongo_errors(settings):
        result = ExportRun(settings, store, request, observer, stop).execute()
    covers_all_active = not request.workspace_ids and request.worker_slot is None and not result.interrupted
    override = bool(request.email_override)
    result.warnings += run_warnings(
        settings, result.workspaces, covers_all_active=covers_all_active, email_override=override
    )
    return result


def export_in_workers(
    count: int, request: ExportRequest, env_file: Path | None, stop_requested: threading.Event, settings: Settings
) -> workers.WorkersResult:
    """One scheduled run shared by `count` child processes, its warnings judged here: each child sees only its share."""
    merged = workers.run_workers(count, request, env_file, stop_requested)
    merged.warnings = list(merged.run.warnings)  # what a child found in the data it exports: a workspace stored twice
    complete = not request.workspace_ids and not merged.interrupted and all(w.document for w in merged.workers)
    merged.warnings += run_warnings(settings, merged.workspaces, covers_all_active=complete)
    return merged


class ExportRun:  # one invocation of `wa-export export`
    def __init__(
        self,
        settings: Settings,
        store: Store,
        request: ExportRequest,
        observer: RunObserver | None = None,
        stop_requested: threading.Event | None = None,
    ) -> None:
        self.settings, self.store, self.request, self.run_id = settings, store, request, new_run_id()
        self.observer, self.stop_requested = observer or SilentObserver(), stop_requested or threading.Event()

    def execute(self) -> RunResult:
        settings, request = self.settings, self.request
        if request.send_email:  # --dry-run too: it must refuse what the real run refuses
            try:
                check_sendable(settings)
            except MailError as error:
                raise SmtpNotConfigured(str(error)) from None
        clock = DatabaseClock(self.store.database_now())  # one clock for the run: the server's now, then monotonic
        key, mail = ArrivalKey(settings.export_arrival_field), MailSession(settings)
        ctx = RunContext(settings, self.store, request, self.run_id, clock, key, mail, self.stop_requested)
        ctx.on_messages = getattr(self.observer, "messages_exported", None)
        result = RunResult(self.run_id, request.trigger, request.dry_run, clock.started_at)
        try:
            try:
                self._export_all(ctx, self._select_workspaces(ctx, result), result)
            finally:
                ctx.mail.close()
            result.finished_at = clock.now()
            if not request.dry_run:
                with unless_connection_lost():  # the work is logged per workspace: a refused summary fails nothing
                    self._record(ctx, result)
        except ConnectionFailure as error:
            raise MongoUnavailable(describe_mongo_error(error, settings)) from None
        return result

    def _select_workspaces(self, ctx: RunContext, result: RunResult) -> list[Workspace]:
        if self.request.workspace_ids:
            listing = self.store.list_workspaces(self.request.workspace_ids)
            active = self.store.active_workspaces()  # one read per run, for folder adoption
        else:  # none at all: a wrong MONGODB_DATABASE is exit 2 (Store.list_workspaces), not "0 workspaces"
            listing = self.store.list_workspaces()
            active = listing.workspaces
        ctx.contested_slugs = contested_slugs((w.name, w.id) for w in active)  # before --workers takes its share
        share = workers.slot_share(listing.workspaces, self.request.worker_slot)
        # A workspace stored twice is exported once; the process that exports it names it.
        exported = {workspace.id for workspace in share}
        result.warnings.extend(
            RunWarning("duplicate_workspace", duplicate.sentence(), workspace_id=duplicate.id)
            for duplicate in listing.duplicates
            if duplicate.id in exported
        )
        return share

    def _export_all(self, ctx: RunContext, workspaces: Sequence[Workspace], result: RunResult) -> None:
        done: list[WorkspaceResult] = []
        if self.request.is_manual:
            work = [partial(export_manual, ctx, workspace) for workspace in workspaces]
            self.observer.run_started(len(workspaces), self.request.trigger)
        else:
            plan = make_plan(ctx, workspaces)
            result.run_anomalies.update(plan.run_anomalies)
            result.problems.extend(plan.problems)
            self.observer.run_started(len(workspaces), self.request.trigger)
            if self.request.moves_cursors:  # nothing new: every such cursor moves to the end in one write
                advance_idle(self.store, ctx.clock, ctx.end_key, plan.idle_advances())
            done = plan.skipped + [_idle_result(ctx, item) for item in plan.idle]
            work = [partial(deliver, ctx, item) for item in plan.work]
        # Once asked to stop, no further workspace is started and the run is interrupted.
        for outcome in itertools.chain(done, (job() for job in work if not self.stop_requested.is_set())):
            result.workspaces.append(outcome)
            self.observer.workspace_finished(outcome)
        result.interrupted = len(result.workspaces) < len(done) + len(work)

    def _record(self, ctx: RunContext, run: RunResult) -> None:
        details = {
            **{name: getattr(run, name) for name in ("trigger", "run_id", "started_at", "finished_at", "problems")},
            "window_end": ctx.end_time if not self.request.is_manual else None,
            "workspaces": len(run.workspaces),
            **{outcome: run.count(outcome) for outcome in ("completed", "failed", "skipped", "no_messages")},
            "message_count": run.message_count,
            "anomalies": run.anomaly_totals(),
            "orphaned_messages": run.orphaned_messages,
            "possible_duplicates": sum(1 for ws in run.workspaces if ws.possible_duplicate),
            "moves_watermark": self.request.moves_cursors,  # the stored field's name, read by `health`
            "all_workspaces": not self.request.workspace_ids,
            "interrupted": run.interrupted,
        }
        logs.record_export_run(self.store.system_logs, run.summary(), ctx.clock.now(), details, failed=run.failed)


def _idle_result(ctx: RunContext, item: WorkItem) -> WorkspaceResult:
    window = {"window_start": time_of(item.start), "window_end": ctx.end_time}
    pulled_back = "its cursor was ahead of the database clock (a clock problem): pulled back to the end of this run's "
    reason = pulled_back + "window, which hides nothing" if item.cursor_ahead else NOTHING_NEW
    result = WorkspaceResult.of(item.workspace, "no_messages", item.recipients, reason=reason, **window)
    if item.cursor_ahead:
        result.anomalies[CURSOR_AHEAD] = 1
    if item.first_cursor is not None and ctx.request.moves_cursors:
        result.cursor_source = item.first_cursor.source
    return result


def export_manual(ctx: RunContext, workspace: Workspace) -> WorkspaceResult:
    request, recipients = ctx.request, ctx.recipients_for(workspace)
    if ctx.without_address(recipients):
        # Only a workspace the operator named is a failure; a run over all of them skips it.
        missing = f"{NO_ADDRESS}: {missing_hint(workspace.id, ctx.settings)} or pass --email"
        return WorkspaceResult.of(workspace, "failed" if request.workspace_ids else "skipped", reason=missing)
    window = request.window or Window(ctx.run_time - DEFAULT_MANUAL_WINDOW, ctx.run_time)
    result = WorkspaceResult.of(workspace, "skipped", recipients, window_start=window.start, window_end=window.end)
    zone = resolve(TIME_ZONE, workspace, ctx.settings)  # schedules are ignored: a manual export is asked for now
    reason: str | None = zone.problem or ""
    if zone.value is not None:
        ctx = ctx.in_zone(zone.value)
        reason = ctx.refusal(recipients, workspace)
        if reason is None:
            try:
                reason = _export(ctx, workspace, result, window)
            except Exception as error:
                reason = workspace_error(ctx, result, error)
    if reason is not None:
        result.outcome, result.reason = "failed", reason
        if not request.dry_run:  # decided as the real run would; a dry run records nothing
            with unless_connection_lost():
                _log(ctx, workspace, result)
    return result


def _export(ctx: RunContext, workspace: Workspace, result: WorkspaceResult, window: Window) -> str | None:
    """Export the window into `result`; why it failed, or None."""
    stats, password = RowStats(), ctx.workbook_password(workspace)
    rows = rows_by_timestamp(ctx.store, workspace, window.start, window.end, stats)
    if ctx.request.dry_run:
        deque(rows, maxlen=0)  # counts the rows, writes none
        result.add_counts(*stats.counts())
        result.outcome = "dry_run"
        return None
    try:
        rows = ctx.with_progress(workspace.id, rows)
        path = write_workbook(ctx.settings, workspace, rows, ctx.run_time, ctx.contested_slugs, password)
    except OSError as error:
        result.add_counts(*stats.counts())
        return describe_file_error(error, ctx.settings.export_dir)
    result.add_counts(*stats.counts())
    if path is None:
        result.outcome, result.reason = "no_messages", "no messages in this window"
        return None
    result.file_path, result.files, result.parts, result.outcome = str(path), [str(path)], 1, "written"
    if not ctx.request.send_email:
        return None
    attachment = fingerprint(path)  # the ledger's record of the file the email carries
    window_times, protected = (window.start, window.end), password is not None
    by_status, to = result.by_status, result.recipients
    mail = compose_export_mail(
        ctx.settings, workspace, ctx.run_time, window_times, by_status, path, to, by_arrival=False, protected=protected
    )
    try:
        ctx.mail.send(mail)
    except MailError as error:
        return ctx.redact(str(error))
    result.outcome, result.emails_sent = "completed", 1
    _log(ctx, workspace, result, attachment)
    return None


def _log(ctx: RunContext, workspace: Workspace, result: WorkspaceResult, attachment: Fingerprint | None = None) -> None:
    completed = result.outcome == "completed"
    status, error = (logs.STATUS_COMPLETED, None) if completed else (logs.STATUS_FAILED, result.reason)
    window, path = (result.window_start, result.window_end), result.file_path
    log_export(ctx, workspace, result.recipients, result, status, window, path, error=error, attachment=attachment)
