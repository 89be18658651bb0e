"""The export run: plan, deliver, record (docs/design.md has the algorithm and its guarantee).

Scheduled runs deliver each workspace's messages in arrival order from its
cursor to the database's now minus EXPORT_LAG_SECONDS, one pass finding who
has new messages; manual runs export the timestamp window the operator asked
for and never touch a cursor. The library reports through an observer and
returns results; it never prints.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence

from pymongo.errors import ConnectionFailure, PyMongoError

from wa_export.clock import DatabaseClock
from wa_export.errors import MongoUnavailable, SmtpNotConfigured
from wa_export.export.context import ExportRequest, MailSession, RunContext
from wa_export.export.delivery import deliver
from wa_export.export.manual import export_manual
from wa_export.export.plan import CURSOR_AHEAD, Plan, WorkItem, make_plan
from wa_export.export.preflight import duplicate_workspace_warning
from wa_export.export.results import (
    RunObserver,
    RunResult,
    SilentObserver,
    Trigger,
    WorkspaceResult,
)
from wa_export.export.workers import slot_share
from wa_export.mail.errors import MailError
from wa_export.mail.message import check_sendable
from wa_export.mail.sender import MailSender
from wa_export.settings import Settings
from wa_export.store import logs
from wa_export.store.arrivals import ArrivalKey, time_of
from wa_export.store.connection import (
    Store,
    Workspace,
    describe_mongo_error,
)
from wa_export.store.state import advance_idle
from wa_export.workbook.naming import contested_slugs


def new_run_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


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
        self.run_id = new_run_id()

    def execute(self) -> RunResult:
        if self.request.send_email:  # --dry-run too: it must refuse what the real run refuses
            try:
                check_sendable(self.settings)
            except MailError as error:
                raise SmtpNotConfigured(str(error)) from None
        # One clock for the whole run: the server's now, then our monotonic clock.
        clock = DatabaseClock(self.store.database_now())
        ctx = RunContext(
            self.settings,
            self.store,
            self.request,
            self.run_id,
            clock,
            ArrivalKey(self.settings.export_arrival_field),
            MailSession(self.settings, self.mailer_factory),
            self.stop_requested,
            on_messages=getattr(self.observer, "messages_exported", None),
        )
        result = RunResult(
            run_id=self.run_id, trigger=self.request.trigger, dry_run=self.request.dry_run, started_at=clock.started_at
        )
        try:
            try:
                workspaces = self._select_workspaces(ctx, result)
                if self.request.is_manual:
                    self._manual(ctx, workspaces, result)
                else:
                    self._scheduled(ctx, workspaces, result)
            finally:
                ctx.mail.close()
            result.finished_at = clock.now()
            if not self.request.dry_run:
                self._record_run_event(ctx, result)
        except ConnectionFailure as error:
            raise MongoUnavailable(describe_mongo_error(error, self.settings)) from None
        return result

    def _select_workspaces(self, ctx: RunContext, result: RunResult) -> list[Workspace]:
        if self.request.workspace_ids:
            listing = self.store.list_workspaces(self.request.workspace_ids)
            active = self.store.active_workspaces()  # one read per run, for folder adoption
        else:  # none at all: a wrong MONGODB_DATABASE is exit 2 (Store.list_workspaces), not "0 workspaces"
            listing = self.store.list_workspaces()
            active = listing.workspaces
        # From every active workspace, before --workers takes its share.
        ctx.contested_slugs = contested_slugs((w.name, w.id) for w in active)
        share = slot_share(listing.workspaces, self.request.worker_slot)
        # A workspace stored twice is exported once; the process that exports it names it.
        exported = {workspace.id for workspace in share}
        result.warnings.extend(
            duplicate_workspace_warning(duplicate) for duplicate in listing.duplicates if duplicate.id in exported
        )
        return share

    def _finish(self, result: RunResult, outcome: WorkspaceResult) -> None:
        result.workspaces.append(outcome)
        self.observer.workspace_finished(outcome)

    def _manual(self, ctx: RunContext, workspaces: Sequence[Workspace], result: RunResult) -> None:
        self.observer.run_started(len(workspaces), self.request.trigger)
        for workspace in workspaces:
            if self.stop_requested.is_set():
                result.interrupted = True
                return
            self._finish(result, export_manual(ctx, workspace))

    def _scheduled(self, ctx: RunContext, workspaces: Sequence[Workspace], result: RunResult) -> None:
        plan = make_plan(ctx, workspaces)
        result.run_anomalies.update(plan.run_anomalies)
        result.problems.extend(plan.problems)
        self.observer.run_started(len(workspaces), self.request.trigger)
        if self.request.moves_cursors:
            # Nothing new: every such cursor moves to the end in one write, no per-workspace round trip.
            advance_idle(self.store, ctx.clock, ctx.end_key, plan.idle_advances())
        for skipped in plan.skipped:
            self._finish(result, skipped)
        for item in plan.idle:
            self._finish(result, _idle_result(ctx, item))
        for item in plan.work:
            if self.stop_requested.is_set():
                result.interrupted = True
                return
            self._finish(result, deliver(ctx, item))

    def _record_run_event(self, ctx: RunContext, run: RunResult) -> None:
        try:
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
                moves_watermark=self.request.moves_cursors,
                all_workspaces=not self.request.workspace_ids,
                interrupted=run.interrupted,
            )
            logs.record_export_run(self.store.system_logs, run.summary(), ctx.clock.now(), details, failed=run.failed)
        except PyMongoError as error:
            if isinstance(error, ConnectionFailure):
                raise
            # The run's work is done and logged per workspace; a refused summary
            # write must not turn a good run into a failure.


def _idle_result(ctx: RunContext, item: WorkItem) -> WorkspaceResult:
    result = WorkspaceResult(
        item.workspace.id,
        item.workspace.name,
        "no_messages",
        recipients=item.recipients.addresses,
        recipients_source=item.recipients.source,
    )
    result.reason = "nothing new since the previous export"
    if item.cursor_ahead:
        result.reason = (
            "its cursor was ahead of the database clock (a clock problem): pulled back to the end of "
            "this run's window, which hides nothing"
        )
        result.anomalies[CURSOR_AHEAD] = 1
    result.window_start, result.window_end = time_of(item.start), ctx.end_time
    if item.first_cursor is not None and ctx.request.moves_cursors:
        result.cursor_source = item.first_cursor.source
    return result


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
    "Plan",
    "RunObserver",
    "RunResult",
    "SilentObserver",
    "SmtpNotConfigured",
    "Trigger",
    "WorkspaceResult",
    "run_export",
]
