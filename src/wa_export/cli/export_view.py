"""The `export` command's output: progress while it runs, then the per-workspace table and the summary line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from wa_export.cli.output import (
    OUTCOME_STYLE,
    Output,
    timestamp,
)
from wa_export.errors import ExitCode
from wa_export.export.run import RunResult, SilentObserver, Trigger, WorkspaceResult
from wa_export.export.workers import WorkersResult
from wa_export.settings import Settings

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    pass


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


@contextmanager
def export_observer(output: Output) -> Iterator[Any]:
    if output.json_output:
        yield SilentObserver()
    elif output.interactive:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=output.console,
            transient=True,
        ) as progress:
            yield _ProgressObserver(progress)
    else:
        yield _PlainObserver(output)

def render_run_warnings(output: Output, warnings: Sequence[Any]) -> None:
    """One greppable WARNING line each (export/preflight.py), on a terminal and under cron alike."""
    for warning in warnings:
        output.line(f"{timestamp()} WARNING {warning.message}")


def render_workers(output: Output, merged: WorkersResult) -> None:
    if output.json_output:
        output.json(merged.as_dict())
        return
    for run in merged.as_dict()["runs"]:
        output.line(f"worker {run['slot']}: exit {run['exit_code']}: {run['summary'] or run['error']}")
    render_run_warnings(output, merged.warnings)
    level = "ERROR" if merged.exit_code else "INFO"
    output.line(f"{timestamp()} {level} {merged.summary()}")

def render_export(output: Output, result: RunResult, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": result.exit_code == ExitCode.OK, **result.as_dict()})
        return
    if output.interactive:
        output.table(export_table(result.workspaces, settings))
    render_run_warnings(output, result.warnings)
    level = "ERROR" if result.failed else "INFO"
    output.line(f"{timestamp()} {level} {result.summary()} (run {result.run_id})")


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
