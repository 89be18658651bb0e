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
from wa_export.export.context import ExportRequest, MailSession, RunContext, new_run_id
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
    RunObserver,
    RunResult,
    RunWarning,
    SilentObserver,
    WorkspaceResult,
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
        refused = outside_allowed_domains(overrides, settings.export_allowed_email_domains)
        if refused:
            raise UsageProblem(
                f"--email {', '.join(refused)} is outside EXPORT_ALLOWED_EMAIL_DOMAINS "
                f"({', '.join(settings.export_allowed_email_domains)}); use an address in an allowed domain."
            )
    window: Window | None = None
    if hours is not None or since is not None or until is not None or overrides:
        end = parse_time(until, "--until", settings.export_timezone) if until else utc_now()
        start_of_hours = end - timedelta(hours=hours if hours is not None else 24)
        window = Window(
            parse_time(since, "--since", settings.export_timezone) if since is not None else start_of_hours, end
        )
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
    settings: Settings,
    request: ExportRequest,
    observer: RunObserver | None = None,
    stop_requested: threading.Event | None = None,
) -> RunResult:
    with open_store(settings) as store, mongo_errors(settings):
        result = ExportRun(settings, store, request, observer, stop_requested).execute()
    result.warnings += run_warnings(
        settings,
        result.workspaces,
        covers_all_active=not request.workspace_ids and request.worker_slot is None and not result.interrupted,
        email_override=bool(request.email_override),
    )
    return result


def export_in_workers(
    count: int, request: ExportRequest, env_file: Path | None, stop_requested: threading.Event, settings: Settings
) -> workers.WorkersResult:
    """One scheduled run shared by `count` child processes, its warnings judged here: each child sees only its share."""
    merged = workers.run_workers(count, request, env_file, stop_requested)
    merged.warnings = [  # what a child found in the data it exports: a workspace stored twice
        RunWarning(**warning)
        for worker in merged.workers
        for warning in worker.document.get("warnings") or []
        if warning.get("kind") == "duplicate_workspace"
    ]
    complete = not request.workspace_ids and not merged.interrupted and all(w.document for w in merged.workers)
    merged.warnings += run_warnings(settings, merged.workspaces, covers_all_active=complete)
    return merged


class ExportRun:
    """One invocation of `wa-export export`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        request: ExportRequest,
        observer: RunObserver | None = None,
        stop_requested: threading.Event | None = None,
    ) -> None:
        self.settings, self.store, self.request = settings, store, request
        self.observer = observer or SilentObserver()
        self.stop_requested = stop_requested or threading.Event()
        self.run_id = new_run_id()

    def execute(self) -> RunResult:
        settings, request = self.settings, self.request
        if request.send_email:  # --dry-run too: it must refuse what the real run refuses
            try:
                check_sendable(settings)
            except MailError as error:
                raise SmtpNotConfigured(str(error)) from None
        clock = DatabaseClock(self.store.database_now())  # one clock for the run: the server's now, then monotonic
        key, mail = ArrivalKey(settings.export_arrival_field), MailSession(settings)
        reporter = getattr(self.observer, "messages_exported", None)
        ctx = RunContext(
            settings, self.store, request, self.run_id, clock, key, mail, self.stop_requested, on_messages=reporter
        )
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
        details = logs.ExportRunDetails(
            trigger=run.trigger,
            run_id=run.run_id,
            started_at=run.started_at,
            finished_at=run.finished_at,
            window_end=ctx.end_time if not self.request.is_manual else None,
            workspaces=len(run.workspaces),
            completed=run.count("completed"),
            failed=run.count("failed"),
            skipped=run.count("skipped"),
            no_messages=run.count("no_messages"),
            message_count=run.message_count,
            anomalies=run.anomaly_totals(),
            orphaned_messages=run.orphaned_messages,
            problems=run.problems,
            possible_duplicates=sum(1 for ws in run.workspaces if ws.possible_duplicate),
            moves_watermark=self.request.moves_cursors,  # the stored field's name, read by `health`
            all_workspaces=not self.request.workspace_ids,
            interrupted=run.interrupted,
        )
        logs.record_export_run(self.store.system_logs, run.summary(), ctx.clock.now(), details, failed=run.failed)


def _idle_result(ctx: RunContext, item: WorkItem) -> WorkspaceResult:
    window = {"window_start": time_of(item.start), "window_end": ctx.end_time}
    result = WorkspaceResult.of(item.workspace, "no_messages", item.recipients, reason=NOTHING_NEW, **window)
    if item.cursor_ahead:
        result.reason = (
            "its cursor was ahead of the database clock (a clock problem): pulled back to the end of "
            "this run's window, which hides nothing"
        )
        result.anomalies[CURSOR_AHEAD] = 1
    if item.first_cursor is not None and ctx.request.moves_cursors:
        result.cursor_source = item.first_cursor.source
    return result


DEFAULT_MANUAL_WINDOW = timedelta(hours=24)  # an --email run without a window (as build_export_request does)


def export_manual(ctx: RunContext, workspace: Workspace) -> WorkspaceResult:
    request = ctx.request
    result = WorkspaceResult.of(workspace, "skipped")
    recipients = ctx.recipients_for(workspace)
    if ctx.without_address(recipients):
        result.reason = f"{NO_ADDRESS}: {missing_hint(workspace.id, ctx.settings)} or pass --email"
        # Only a workspace the operator named is a failure; a run over all of them skips it.
        if request.workspace_ids:
            result.outcome = "failed"
        return result
    result.recipients, result.recipients_source = recipients.addresses, recipients.source
    window = request.window or Window(ctx.run_time - DEFAULT_MANUAL_WINDOW, ctx.run_time)
    result.window_start, result.window_end = window.start, window.end
    zone = resolve(TIME_ZONE, workspace, ctx.settings)  # schedules are ignored: a manual export is asked for now
    if zone.value is None:
        reason: str | None = zone.problem or ""
    else:
        ctx = ctx.in_zone(zone.value)
        reason = ctx.refusal(recipients, workspace)
        if reason is None:
            try:
                reason = _export(ctx, workspace, result, window)
            except Exception as error:
                reason = workspace_error(ctx, result, error)
    if reason is not None:
        result.outcome, result.reason = "failed", reason
        if not ctx.request.dry_run:  # decided as the real run would; a dry run records nothing
            with unless_connection_lost():
                _log(ctx, workspace, result)
    return result


def _export(ctx: RunContext, workspace: Workspace, result: WorkspaceResult, window: Window) -> str | None:
    """Export the window into `result`; why it failed, or None."""
    stats = RowStats()
    rows = rows_by_timestamp(ctx.store, workspace, window.start, window.end, stats)
    if ctx.request.dry_run:
        deque(rows, maxlen=0)  # counts the rows, writes none
        result.add_counts(*stats.counts())
        result.outcome = "dry_run"
        return None
    password = ctx.workbook_password(workspace)
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
    result.file_path, result.files, result.parts = str(path), [str(path)], 1
    if not ctx.request.send_email:
        result.outcome = "written"
        return None
    attachment = fingerprint(path)  # the ledger's record of the file the email carries
    window_times = (window.start, window.end)
    try:
        ctx.mail.send(
            compose_export_mail(
                ctx.settings,
                workspace,
                ctx.run_time,
                window_times,
                result.by_status,
                path,
                result.recipients,
                by_arrival=False,
                protected=password is not None,
            )
        )
    except MailError as error:
        return ctx.redact(str(error))
    result.outcome, result.emails_sent = "completed", 1
    _log(ctx, workspace, result, attachment)
    return None


def _log(ctx: RunContext, workspace: Workspace, result: WorkspaceResult, attachment: Fingerprint | None = None) -> None:
    status, error = (
        (logs.STATUS_COMPLETED, None) if result.outcome == "completed" else (logs.STATUS_FAILED, result.reason)
    )
    window = (result.window_start, result.window_end)
    log_export(
        ctx, workspace, result.recipients, result, status, window, result.file_path, error=error, attachment=attachment
    )
