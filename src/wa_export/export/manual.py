"""A manual export (--hours/--since/--until/--email): a timestamp window, never a cursor or lease."""

from __future__ import annotations

from collections import deque
from datetime import timedelta

from wa_export.clock import Window
from wa_export.export.context import RunContext
from wa_export.export.delivery import (
    describe_file_error,
    log_export,
    unless_connection_lost,
    workspace_error,
    write_workbook,
)
from wa_export.export.email_text import compose_export_mail
from wa_export.export.results import NO_ADDRESS, WorkspaceResult
from wa_export.export.rows import RowStats, rows_by_timestamp
from wa_export.mail.errors import MailError
from wa_export.recipients import missing_hint
from wa_export.store import logs
from wa_export.store.connection import Workspace
from wa_export.workbook.fingerprint import Fingerprint, fingerprint
from wa_export.workspace_settings import TIME_ZONE, resolve

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
