"""The `logs` command's output: recent exports or system events, newest first."""

from __future__ import annotations

from rich import box
from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output, display_path, outcome_cell, short_time, styled
from wa_export.commands.logs import LogsReport
from wa_export.settings import Settings
from wa_export.units import local_time

WIDE_LOGS = 150  # below this terminal width the logs table leaves the file name to --json


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
            event = styled(escape(entry.event_type), "bold red" if entry.event_type == "error" else "")
            table.add_row(local_time(entry.time, settings, "%Y-%m-%d %H:%M:%S"), event, escape(entry.message))
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
    keep_whole: list[str] = []  # ids shown instead of a name, file paths
    for export in report.export_entries:
        window = ""
        if export.window_start and export.window_end:
            window = f"{local_time(export.window_start, settings, '%H:%M')}–{local_time(export.window_end, settings, '%H:%M')}"
        detail = f"[red]{escape(export.error)}[/red]" if export.error else escape(export.recipients)
        if not export.workspace_name:
            keep_whole.append(export.workspace_id)
        cells = [
            short_time(export.time, settings),
            escape(export.workspace_name or export.workspace_id),
            {"scheduled": "sched"}.get(export.trigger or "", export.trigger or ""),
            window,
            str(export.message_count),
            outcome_cell(export.status),
        ]
        if export.possible_duplicate:
            cells[-1] += " [yellow](possible duplicate)[/yellow]"
        if with_file:
            keep_whole.append(display_path(export.file_path, settings.export_dir))
            cells.append(escape(keep_whole[-1]))
        table.add_row(*cells, detail)
    output.table(table, keep_whole)
    if not with_file:
        output.line("File paths and full times: wa-export logs --json.")
