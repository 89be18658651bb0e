"""Rendering for the CLI: rich on a terminal, plain log lines otherwise, or one JSON document.

Part of the CLI layer. Personal data (phone numbers, message text) never
appears here: only counts, workspace names and ids, file paths, recipients.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from wa_export.commands.cleanup import CleanupResult
from wa_export.commands.logs import LogsReport
from wa_export.commands.stats import StatsReport
from wa_export.export.run import RunResult, SilentObserver, Trigger, WorkspaceResult
from wa_export.export.workers import WorkersResult
from wa_export.settings import Settings
from wa_export.units import format_bytes

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    from wa_export.commands.health import HealthReport
    from wa_export.commands.test_email import TestEmailResult
    from wa_export.demo.run import DemoResult

OUTCOME_STYLE = {
    "completed": "green",
    "written": "green",
    "dry_run": "cyan",
    "no_messages": "dim",
    "skipped": "yellow",
    "failed": "bold red",
}


# Tables printed when stdout is not a terminal are never wrapped: a row is one line.
PLAIN_TABLE_WIDTH = 10_000


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class _PlainObserver:
    """Under cron: one log line per workspace, greppable, no escape codes."""

    def __init__(self, output: Output) -> None:
        self.output = output

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        self.output.line(f"{timestamp()} INFO {trigger} export run started: {total_workspaces} workspaces")

    def workspace_finished(self, result: WorkspaceResult) -> None:
        level = "ERROR" if result.outcome == "failed" else "INFO"
        fields = [
            f"workspace={result.workspace_id}",
            f"name={json.dumps(result.workspace_name, ensure_ascii=False)}",
            f"outcome={result.outcome}",
            f"messages={result.message_count}",
        ]
        if result.file_path:
            fields.append(f"file={result.file_path}")
        if result.reason:
            fields.append(f"reason={json.dumps(result.reason, ensure_ascii=False)}")
        self.output.line(f"{timestamp()} {level} " + " ".join(fields))


class _ProgressObserver:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        self.task = self.progress.add_task(f"{trigger} export", total=total_workspaces)

    def workspace_finished(self, result: WorkspaceResult) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


class Output:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        self.console = Console(highlight=False, soft_wrap=True)
        self.error_console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = sys.stdout.isatty() and not json_output

    # --- primitives -------------------------------------------------------------

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text, markup=False)
        else:
            print(text, flush=True)

    def json(self, document: Any) -> None:
        print(json.dumps(document, default=_json_default, ensure_ascii=False, indent=2), flush=True)

    def table(self, table: Table) -> None:
        if self.interactive:
            self.console.print(table)
            return
        # Not a terminal (cron, a pipe): plain lines (SPEC §4). The title is a line of
        # its own, then the header and one line per row: no box characters, no
        # wrapping (a row is one greppable line), no padding to a terminal width.
        title = table.title
        if title:
            self.line(Text.from_markup(title).plain if isinstance(title, str) else str(title))
        table.title = None
        table.box = None
        table.show_edge = False
        table.show_lines = False
        table.pad_edge = False
        for column in table.columns:
            column.no_wrap = True  # and PLAIN_TABLE_WIDTH leaves room for every cell
        buffer = io.StringIO()
        Console(file=buffer, width=PLAIN_TABLE_WIDTH, no_color=True, highlight=False).print(table)
        for row in buffer.getvalue().splitlines():
            if row.strip():
                self.line(row.rstrip())

    def error(self, message: str, code: int) -> None:
        if self.json_output:
            self.json({"ok": False, "exit_code": code, "error": message})
        self.stderr(message)

    def stderr(self, message: str) -> None:
        """One `wa-export: …` line on stderr (stdout, and so a --json document, stays untouched)."""
        print(f"wa-export: {message}", file=sys.stderr, flush=True)

    # --- export -----------------------------------------------------------------

    @contextmanager
    def export_observer(self) -> Iterator[Any]:
        if self.json_output:
            yield SilentObserver()
        elif self.interactive:
            with Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
                transient=True,
            ) as progress:
                yield _ProgressObserver(progress)
        else:
            yield _PlainObserver(self)

    def workers_result(self, merged: WorkersResult) -> None:
        if self.json_output:
            self.json(merged.as_dict())
            return
        for run in merged.as_dict()["runs"]:
            self.line(f"worker {run['slot']}: exit {run['exit_code']}: {run['summary'] or run['error']}")
        level = "ERROR" if merged.exit_code else "INFO"
        self.line(f"{timestamp()} {level} {merged.summary()}")

    def export_result(self, result: RunResult, settings: Settings) -> None:
        if self.json_output:
            self.json({"ok": result.exit_code == 0, **result.as_dict()})
            return
        if self.interactive:
            self.table(export_table(result.workspaces, settings))
        level = "ERROR" if result.failed else "INFO"
        self.line(f"{timestamp()} {level} {result.summary()} (run {result.run_id})")


def export_table(results: Sequence[WorkspaceResult], settings: Settings) -> Table:
    table = Table(title="wa-export", show_lines=False)
    for column in ("Workspace", "Outcome", "Messages", "Window", "File / reason"):
        table.add_column(column, overflow="fold")
    zone = settings.export_timezone
    for result in results:
        window = ""
        if result.window_start and result.window_end:
            window = (
                f"{result.window_start.astimezone(zone):%Y-%m-%d %H:%M} → {result.window_end.astimezone(zone):%H:%M}"
            )
        detail = result.file_path or ""
        if result.reason:
            detail = f"{detail} {result.reason}".strip()
        style = OUTCOME_STYLE.get(result.outcome, "")
        table.add_row(
            f"{escape(result.workspace_name) or '(unnamed)'}\n[dim]{result.workspace_id}[/dim]",
            f"[{style}]{result.outcome}[/{style}]" if style else result.outcome,
            str(result.message_count),
            window,
            escape(detail),
        )
    return table


# --- test-email, health, demo (issue 3) ------------------------------------------

HEALTH_STYLE = {"ok": "green", "warning": "yellow", "failed": "bold red", "skipped": "dim"}


def render_test_email(output: Output, result: TestEmailResult) -> None:
    if output.json_output:
        output.json(result.as_dict())
    to = ", ".join(result.recipients)
    if result.error is not None:
        # stderr, like every other failure; the step names where it broke, the sentence what to do.
        output.stderr(f"test email to {to} failed at step {result.error.step}: {result.error}")
        return
    if not output.json_output:
        output.line(
            f"{timestamp()} INFO test email sent to {to} via {result.server} ({result.security}) "
            f"with {result.attachment} attached"
        )


def render_health(output: Output, report: HealthReport) -> None:
    if output.json_output:
        output.json(report.as_dict())
        return
    if output.interactive:
        table = Table(title="wa-export health")
        for column in ("Check", "Status", "Reason"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            style = HEALTH_STYLE.get(check.status, "")
            table.add_row(check.name, f"[{style}]{check.status}[/{style}]", escape(check.reason))
        output.table(table)
        for check in report.checks:  # unwrapped, so they can be copied into mongosh
            for command in check.details.get("commands", []):
                output.line(command)
        output.line(report.summary())
        return
    for check in report.checks:  # under cron: one greppable line per check
        output.line(f"{timestamp()} {check.status:<7} {check.name}: {check.reason}")
    output.line(f"{timestamp()} {'ERROR' if report.exit_code else 'INFO'} {report.summary()}")


def render_demo(output: Output, result: DemoResult) -> None:
    from pathlib import (
        PurePath,  # the table shows file names; full paths follow below it
    )

    if output.json_output:
        output.json(result.as_dict())
        return
    run = result.run
    if output.interactive:
        table = Table(title="wa-export demo")
        for column in ("Workspace", "Outcome", "Messages", "Workbook"):
            table.add_column(column, overflow="fold")
        for workspace in run.workspaces:
            style = OUTCOME_STYLE.get(workspace.outcome, "")
            table.add_row(
                escape(workspace.workspace_name),
                f"[{style}]{workspace.outcome}[/{style}]" if style else workspace.outcome,
                str(workspace.message_count),
                escape(PurePath(workspace.file_path).name if workspace.file_path else workspace.reason or ""),
            )
        output.table(table)
    output.line(run.summary())
    output.line(f"Workbooks ({len(result.workbooks)}) in {result.exports_dir}:")
    for path in result.workbooks:
        output.line(f"  {path}")
    output.line(f"Emails ({len(result.emails)}) as .eml files in {result.mail_dir}:")
    for path in result.emails:
        output.line(f"  {path}")
    output.line("Both local servers are stopped. Next: configure .env for your servers and run `wa-export health`.")


# --- cleanup, stats, logs (issue 3) -------------------------------------------------

_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24
CLEANUP_TABLE_ROWS = 15
STATS_MAX_ROWS = 31  # longer periods are summed into buckets of several days: one screen
SPARK_MAX_WIDTH = 14
WIDE_LOGS = 150  # below this terminal width the logs table leaves the file name to --json


def bar(value: int, maximum: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar scaled to `maximum`, in eighths of a character so small days still show."""
    if maximum <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / maximum * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def sparkline(values: Sequence[int]) -> str:
    """One character per value, scaled to the largest; zero stays a visible ▁."""
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[0] if value <= 0 else _SPARKS[max(1, round(value / top * 7))] for value in values)


def _chunks(count: int, limit: int) -> list[tuple[int, int]]:
    """[start, end) index ranges splitting `count` items into at most `limit` equal-sized groups."""
    size = max(1, -(-count // limit))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def _local(moment: datetime | None, settings: Settings, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "" if moment is None else moment.astimezone(settings.export_timezone).strftime(fmt)


def _short_time(moment: datetime | None, settings: Settings) -> str:
    """'11-25 22:08' this year (short enough for an 80-column table), '2025-11-25 22:08' before."""
    if moment is None:
        return ""
    local = moment.astimezone(settings.export_timezone)
    if local.year == datetime.now(settings.export_timezone).year:
        return local.strftime("%m-%d %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")


def render_cleanup(output: Output, result: CleanupResult, settings: Settings) -> None:
    _render_cleanup_body(output, result, settings)
    if result.event_error is not None:
        # stderr keeps --json stdout a single document; the event is part of the job (exit 3).
        output.stderr(
            f"the files were cleaned, but the cleanup event could not be recorded in system_logs: {result.event_error}"
        )


def _render_cleanup_body(output: Output, result: CleanupResult, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": result.exit_code == 0, **result.as_dict()})
        return
    verb = "would delete" if result.dry_run else "deleted"
    if output.interactive and result.files:
        table = Table(title=f"wa-export cleanup{' (dry run)' if result.dry_run else ''}", box=box.SIMPLE_HEAD)
        table.add_column("Folder", overflow="fold")
        for column in ("Files", "Size", "Oldest", "Newest", "Folder removed"):
            table.add_column(column, no_wrap=True)
        folders: dict[str, list[Any]] = {}
        for item in result.files:
            folders.setdefault(item.folder, []).append(item)
        for index, (folder, items) in enumerate(sorted(folders.items())):
            if index == CLEANUP_TABLE_ROWS:
                more = f"… and {len(folders) - index} more folders (--json lists every file)"
                table.add_row(more, "", "", "", "", "")
                break
            times = [item.modified_at for item in items]
            table.add_row(
                escape(folder.rsplit("/", 1)[-1]),
                str(len(items)),
                format_bytes(sum(item.size for item in items)),
                _local(min(times), settings),
                _local(max(times), settings),
                "yes" if folder in result.folders_removed else "",
            )
        output.table(table)
    elif not output.interactive:
        # Under cron the log is the audit trail: one line per file.
        for item in result.files:
            output.line(f"{timestamp()} INFO {verb} {item.kind} {item.path} size={item.size}")
        for folder in result.folders_removed:
            output.line(f"{timestamp()} INFO {'would remove' if result.dry_run else 'removed'} empty folder {folder}")
    for error in result.errors:
        output.line(f"{timestamp()} ERROR {error}")
    level = "ERROR" if result.exit_code else "INFO"
    output.line(f"{timestamp()} {level} {result.summary()}")


def render_stats(output: Output, report: StatsReport, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": True, **report.as_dict()})
        return
    if report.single:
        _render_workspace_stats(output, report, settings)
    else:
        _render_stats_overview(output, report, settings)


def _render_workspace_stats(output: Output, report: StatsReport, settings: Settings) -> None:
    period = report.period
    stats = report.workspaces[0]
    span = f"{period.days[0]:%Y-%m-%d} – {period.days[-1]:%Y-%m-%d} ({period.timezone_name})"
    statuses = ["received", "sent_via_ai", "sent_by_human"]
    statuses += [s for s in sorted({s for day in stats.per_day for s in day.counts}) if s not in statuses]
    labels = {"received": "Received", "sent_via_ai": "AI", "sent_by_human": "Human"}
    rows: list[tuple[str, dict[str, int], int]] = []
    chunks = _chunks(len(stats.per_day), STATS_MAX_ROWS)
    for start, end in chunks:
        days = stats.per_day[start:end]
        label = f"{days[0].day:%a %Y-%m-%d}" if len(days) == 1 else f"{days[0].day:%Y-%m-%d} +{len(days) - 1}d"
        counts = {status: sum(day.counts.get(status, 0) for day in days) for status in statuses}
        rows.append((label, counts, sum(counts.values())))
    size = chunks[0][1] - chunks[0][0]
    per = "day" if size == 1 else f"{size} days"
    table = Table(
        title=escape(f"{stats.workspace.name or '(unnamed)'} ({stats.workspace.id}): messages per {per}, {span}"),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("Day" if per == "day" else "Days", no_wrap=True)
    for status in statuses:
        table.add_column(labels.get(status, status.capitalize()), justify="right")
    table.add_column("Total", justify="right")
    table.add_column("Trend", no_wrap=True)
    top = max((total for _, _, total in rows), default=0)
    for label, counts, total in rows:
        trend = bar(total, top)
        table.add_row(
            label,
            *(str(counts[status]) for status in statuses),
            str(total),
            f"[cyan]{trend}[/cyan]" if trend else "",
        )
    totals = stats.totals
    table.add_section()
    table.add_row("Total", *(str(totals.get(status, 0)) for status in statuses), str(stats.total), "")
    output.table(table)
    exports = stats.exports
    output.line(
        f"Exports in these days: {exports.completed} completed ({exports.messages_exported} messages), "
        f"{exports.failed} failed"
        + (f" (last failure {_local(exports.last_failure, settings)})" if exports.last_failure else "")
        + f"; last success: {_local(exports.last_success, settings) or 'never'}."
    )
    if stats.workspace.status != "active":
        output.line(f"Workspace status is {stats.workspace.status!r}: scheduled runs skip it.")
    if not stats.address_configured:
        output.line(f"No email address configured: set WORKSPACE_{stats.workspace.id}_EMAIL.")


def _render_stats_overview(output: Output, report: StatsReport, settings: Settings) -> None:
    period = report.period
    span = f"{period.days[0]:%Y-%m-%d} – {period.days[-1]:%Y-%m-%d} ({period.timezone_name})"
    if not report.workspaces:
        output.line(f"No active workspaces ({span}).")
        return
    table = Table(title=f"Active workspaces, {span}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Workspace / id", overflow="fold", min_width=24)
    table.add_column("Msgs", justify="right")
    table.add_column("Trend", no_wrap=True)
    table.add_column("Exports", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Last success", no_wrap=True)
    table.add_column("Addr")
    chunks = _chunks(len(period.days), SPARK_MAX_WIDTH)
    name_id_separator = "\n" if output.interactive else " "  # plain output: one line per workspace
    for stats in report.workspaces:
        failed = stats.exports.failed
        totals = [day.total for day in stats.per_day]
        table.add_row(
            f"{escape(stats.workspace.name) or '(unnamed)'}{name_id_separator}[dim]{stats.workspace.id}[/dim]",
            str(stats.total),
            sparkline([sum(totals[start:end]) for start, end in chunks]),
            str(stats.exports.completed),
            f"[bold red]{failed}[/bold red]" if failed else "0",
            _short_time(stats.exports.last_success, settings) or "never",
            "yes" if stats.address_configured else "[yellow]no[/yellow]",
        )
    output.table(table)
    missing = sum(1 for stats in report.workspaces if not stats.address_configured)
    output.line(
        f"{len(report.workspaces)} active workspaces, {sum(s.total for s in report.workspaces)} messages, "
        f"{sum(s.exports.completed for s in report.workspaces)} exports, "
        f"{sum(s.exports.failed for s in report.workspaces)} failed, {missing} without an address. "
        "Details: wa-export stats WORKSPACE_ID."
    )


def render_logs(output: Output, report: LogsReport, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": True, **report.as_dict()})
        return
    zone = settings.timezone_name
    if report.kind == "system":
        if not report.system_entries:
            output.line("No wa-export events in system_logs yet.")
            return
        table = Table(title=f"wa-export events, newest first (times in {zone})", box=box.SIMPLE_HEAD)
        table.add_column("Time", no_wrap=True)
        table.add_column("Event", no_wrap=True)
        table.add_column("Message", overflow="fold")
        for entry in report.system_entries:
            style = "bold red" if entry.event_type == "error" else ""
            event = f"[{style}]{escape(entry.event_type)}[/{style}]" if style else escape(entry.event_type)
            table.add_row(_local(entry.time, settings, "%Y-%m-%d %H:%M:%S"), event, escape(entry.message))
        output.table(table)
        return
    if not report.export_entries:
        output.line("No export logs match." if report.status or report.workspace_id else "No export logs yet.")
        return
    # Plain output (cron, pipes) is never wrapped: it always has room for the file name.
    with_file = not output.interactive or output.console.width >= WIDE_LOGS
    table = Table(title=f"Exports, newest first (times in {zone})", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Time", no_wrap=True)
    table.add_column("Workspace", overflow="fold", min_width=10)
    table.add_column("Run", no_wrap=True)
    table.add_column("Window", no_wrap=True)
    table.add_column("Msgs", justify="right")
    table.add_column("Status", no_wrap=True)
    if with_file:
        table.add_column("File", no_wrap=True)
    table.add_column("Recipients / error", overflow="fold", min_width=20)
    for entry in report.export_entries:
        window = ""
        if entry.window_start and entry.window_end:
            window = f"{_local(entry.window_start, settings, '%H:%M')}–{_local(entry.window_end, settings, '%H:%M')}"
        detail = f"[red]{escape(entry.error)}[/red]" if entry.error else escape(entry.recipients)
        style = OUTCOME_STYLE.get(entry.status, "")
        cells = [
            _short_time(entry.time, settings),
            escape(entry.workspace_name or entry.workspace_id),
            {"scheduled": "sched"}.get(entry.trigger or "", entry.trigger or ""),
            window,
            str(entry.message_count),
            f"[{style}]{escape(entry.status)}[/{style}]" if style else escape(entry.status),
        ]
        if entry.possible_duplicate:
            cells[-1] += " [yellow](possible duplicate)[/yellow]"
        if with_file:
            cells.append(escape(entry.file_path.rsplit("/", 1)[-1]) if entry.file_path else "")
        table.add_row(*cells, detail)
    output.table(table)
    if not with_file:
        output.line("File names and full times: wa-export logs --json.")
