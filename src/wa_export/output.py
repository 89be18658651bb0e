"""Rendering for the CLI: rich on a terminal, plain log lines otherwise, or one JSON document.

Part of the CLI layer. Personal data (phone numbers, message text) never
appears here: only counts, workspace names and ids, file paths, recipients.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import Settings
from .exporter import RunResult, Trigger, WorkspaceResult

OUTCOME_STYLE = {
    "completed": "green",
    "written": "green",
    "dry_run": "cyan",
    "no_messages": "dim",
    "skipped": "yellow",
    "failed": "bold red",
}


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


class _SilentObserver:
    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        return None

    def workspace_finished(self, result: WorkspaceResult) -> None:
        return None


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
        else:
            Console(width=200, no_color=True, highlight=False).print(table)

    def error(self, message: str, code: int) -> None:
        if self.json_output:
            self.json({"ok": False, "exit_code": code, "error": message})
        print(f"wa-export: {message}", file=sys.stderr, flush=True)

    # --- export -----------------------------------------------------------------

    @contextmanager
    def export_observer(self) -> Iterator[Any]:
        if self.json_output:
            yield _SilentObserver()
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
