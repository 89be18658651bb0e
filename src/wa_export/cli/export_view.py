"""The `export` command's output: progress while it runs, then the per-workspace table and the summary line."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from wa_export.cli.output import Output, display_path, outcome_cell, workspace_cell
from wa_export.errors import ExitCode
from wa_export.export.results import RunResult, SilentObserver, Trigger, WorkspaceResult
from wa_export.export.workers import WorkersResult
from wa_export.settings import Settings
from wa_export.units import local_time

NOT_COUNTED = "–"  # the run skipped or refused the workspace before counting its messages


class _PlainObserver:
    """Under cron: one log line per workspace, greppable, no escape codes."""

    def __init__(self, output: Output, export_dir: Path | None) -> None:
        self.output = output
        self.export_dir = export_dir

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        where = f", files in {self.export_dir}" if self.export_dir is not None else ""
        self.output.log("INFO", f"{trigger} export run started: {total_workspaces} workspaces{where}")

    def messages_exported(self, workspace_id: str, count: int) -> None:
        return None  # one line per workspace is enough in a log

    def workspace_finished(self, result: WorkspaceResult) -> None:
        level = "ERROR" if result.outcome == "failed" else "INFO"
        fields = [
            f"workspace={result.workspace_id}",
            f"name={json.dumps(result.workspace_name, ensure_ascii=False)}",
            f"outcome={result.outcome}",
            f"messages={result.message_count}",
        ]
        if result.file_path:
            fields.append(f"file={display_path(result.file_path, self.export_dir)}")
        if result.reason:
            fields.append(f"reason={json.dumps(result.reason, ensure_ascii=False)}")
        self.output.log(level, " ".join(fields))


class _CountColumn(ProgressColumn):
    """``3/10`` for the workspaces, ``12,345`` for the messages (their total is not known in advance)."""

    def render(self, task: Task) -> Text:
        total = "" if task.total is None else f"/{int(task.total):,}"
        return Text(f"{int(task.completed):,}{total}", style="progress.download")


class _ProgressObserver:
    """Two lines on a terminal: workspaces done of all, and messages exported so far."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.messages_task: Any = None

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        self.task = self.progress.add_task(f"{trigger} export", total=total_workspaces)

    def messages_exported(self, workspace_id: str, count: int) -> None:
        if self.messages_task is None:
            # total=None: a pulsing bar and a running count, since nobody counts the messages in advance.
            self.messages_task = self.progress.add_task("messages", total=None)
        self.progress.advance(self.messages_task, count)

    def workspace_finished(self, result: WorkspaceResult) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


@contextmanager
def export_observer(output: Output, export_dir: Path | None = None) -> Iterator[Any]:
    """The run's observer for this output; ``export_dir`` lets log lines show file paths relative to it."""
    if output.json_output:
        yield SilentObserver()
    elif output.interactive:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            _CountColumn(),
            TimeElapsedColumn(),
            console=output.console,
            transient=True,
        ) as progress:
            yield _ProgressObserver(progress)
    else:
        yield _PlainObserver(output, export_dir)


def render_run_warnings(output: Output, warnings: Sequence[Any]) -> None:
    """One greppable WARNING line each (export/results.py), on a terminal and under cron alike."""
    for warning in warnings:
        output.log("WARNING", warning.message)


def render_workers(output: Output, merged: WorkersResult) -> None:
    if output.json_output:
        output.json(merged.as_dict())
        return
    for run in merged.as_dict()["runs"]:
        output.line(f"worker {run['slot']}: exit {run['exit_code']}: {run['summary'] or run['error']}")
    render_run_warnings(output, merged.warnings)
    output.summary(merged.summary(), merged.exit_code)


def render_export(output: Output, result: RunResult, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": result.exit_code == ExitCode.OK, **result.as_dict()})
    else:
        if output.interactive:
            _render_export_table(output, result.workspaces, settings)
        render_run_warnings(output, result.warnings)
        output.summary(f"{result.summary()} (run {result.run_id})", result.failed)
    render_tracebacks(output, result.workspaces)


def render_tracebacks(output: Output, results: Sequence[WorkspaceResult]) -> None:
    """The traceback of each workspace an unexpected error failed, on stderr (with --json too), already redacted."""
    for result in results:
        if result.traceback:
            output.stderr(
                f"internal error in workspace {result.workspace_id} ({result.workspace_name}), "
                f"please report it with this traceback:\n{result.traceback.rstrip()}"
            )


def _render_export_table(output: Output, results: Sequence[WorkspaceResult], settings: Settings) -> None:
    export_dir = settings.export_dir
    with_files = export_table(results, settings)
    if output.fits(with_files, export_keep_whole(results, export_dir)):
        output.table(with_files)
        if any(result.file_path for result in results):
            output.line(f"Files are in {export_dir}.")
        return
    # Too narrow for the paths: the table without them, then one unwrapped line per file or reason.
    output.table(export_table(results, settings, with_detail=False), [r.workspace_id for r in results])
    details = [(result, detail) for result in results if (detail := _detail(result, export_dir))]
    if details:
        output.line(f"Files (in {export_dir}) and reasons:")
        for result, detail in details:
            output.line(f"  {result.workspace_name or '(unnamed)'} ({result.workspace_id}): {detail}")


def _detail(result: WorkspaceResult, export_dir: Path) -> str:
    return " ".join(part for part in (display_path(result.file_path, export_dir), result.reason or "") if part)


def export_keep_whole(results: Sequence[WorkspaceResult], export_dir: Path) -> list[str]:
    """What the table must show unbroken: ids, file paths, and path- or variable-like words of reasons."""
    words = [result.workspace_id for result in results]
    for result in results:
        words.append(display_path(result.file_path, export_dir))
        words += [word for word in (result.reason or "").split() if "/" in word or "_" in word]
    return words


def export_table(results: Sequence[WorkspaceResult], settings: Settings, *, with_detail: bool = True) -> Table:
    table = Table(title="wa-export", show_lines=False)
    # As wide as the longest id, so an id (on its own line under the name) fits whole when anything can.
    table.add_column("Workspace", overflow="fold", min_width=max((len(r.workspace_id) for r in results), default=10))
    table.add_column("Outcome", no_wrap=True)
    table.add_column("Messages", justify="right", no_wrap=True)
    table.add_column("Window", overflow="fold")
    if with_detail:
        table.add_column("File / reason", overflow="fold")
    for result in results:
        window = ""
        if result.window_start and result.window_end:
            window = f"{local_time(result.window_start, settings)} → {local_time(result.window_end, settings, '%H:%M')}"
        cells = [
            workspace_cell(result.workspace_name, result.workspace_id),
            outcome_cell(result.outcome),
            _message_count_cell(result),
            window,
        ]
        if with_detail:
            cells.append(escape(_detail(result, settings.export_dir)))
        table.add_row(*cells)
    return table


def _message_count_cell(result: WorkspaceResult) -> str:
    # A skipped or refused workspace was never counted: "0" would claim nothing is waiting.
    if result.message_count == 0 and result.outcome in ("skipped", "failed"):
        return NOT_COUNTED
    return f"{result.message_count:,}"
