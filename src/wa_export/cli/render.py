"""Each command's result on screen: a table on a terminal, greppable log lines under cron, or one JSON document.

Why this module is long: one renderer per command, each needing its own table and its own plain lines.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from wa_export.cli.output import (
    Output,
    column_table,
    display_path,
    outcome_cell,
    short_time,
    styled,
    unbreakable_words,
    workspace_cell,
)
from wa_export.clock import SECOND_FORMAT
from wa_export.errors import ExitCode
from wa_export.units import count_noun, format_age, format_bytes, local_time

if TYPE_CHECKING:  # rendering only: each command imports just the library it uses
    from wa_export.commands.cleanup import CleanupFile, CleanupResult
    from wa_export.commands.config import ConfigReport, SettingLine
    from wa_export.commands.deploy import DeployResult
    from wa_export.commands.health import HealthReport
    from wa_export.commands.logs import LogsReport, SystemLogEntry
    from wa_export.commands.resend import ResendResult
    from wa_export.commands.state import CursorMove, StateReport, WorkspaceReport
    from wa_export.commands.stats import StatsReport, WorkspaceStats
    from wa_export.commands.test_email import TestEmailResult
    from wa_export.commands.verify import VerifyReport
    from wa_export.demo.run import DemoResult
    from wa_export.export.results import RunResult, Trigger, WorkspaceResult
    from wa_export.export.workers import WorkersResult
    from wa_export.settings import Settings
    from wa_export.store.ledger import LedgerEntry

NOT_COUNTED = "–"  # the run skipped or refused the workspace before counting its messages
CLEANUP_TABLE_ROWS = 15
WIDE_LOGS = 150  # below this terminal width the logs table leaves the file name to --json
HEALTH_STYLE = {"ok": "green", "warning": "yellow", "failed": "bold red", "skipped": "dim"}
ADDRESS_STYLE = {"no": "yellow", "bad": "bold red"}  # stats' Addr column: a missing or refused address
_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24
STATS_MAX_ROWS = 31  # longer periods are summed into buckets of several days: one screen
SPARK_MAX_WIDTH = 14


def json_or(output: Output, document: Mapping[str, Any]) -> bool:
    """Print ``document`` and say so under --json; False when the caller renders for people."""
    if output.json_output:
        output.json(document)
    return output.json_output


# --------------------------------------------------------------------------- export


class _PlainObserver:
    """Under cron: one log line per workspace, greppable, no escape codes."""

    def __init__(self, output: Output, export_dir: Path | None) -> None:
        self.output = output
        self.export_dir = export_dir

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        where = f", files in {self.export_dir}" if self.export_dir is not None else ""
        self.output.log("INFO", f"{trigger} export run started: {count_noun(total_workspaces, 'workspace')}{where}")

    def messages_exported(self, workspace_id: str, count: int) -> None:
        return None  # one line per workspace is enough in a log

    def workspace_finished(self, result: WorkspaceResult) -> None:
        fields = [
            f"workspace={result.workspace_id}",
            f"name={json.dumps(result.workspace_name, ensure_ascii=False)}",
            f"outcome={result.outcome}",
            f"messages={_message_count(result, '{:d}')}",
        ]
        if result.file_path:
            fields.append(f"file={display_path(result.file_path, self.export_dir)}")
        if result.reason:
            fields.append(f"reason={json.dumps(result.reason, ensure_ascii=False)}")
        self.output.log("ERROR" if result.outcome == "failed" else "INFO", " ".join(fields))


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
        if self.messages_task is None:  # total=None: a pulsing bar and a running count
            self.messages_task = self.progress.add_task("messages", total=None)
        self.progress.advance(self.messages_task, count)

    def workspace_finished(self, result: WorkspaceResult) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


@contextmanager
def export_observer(output: Output, export_dir: Path | None = None) -> Iterator[Any]:
    """The run's observer for this output; ``export_dir`` lets log lines show file paths relative to it."""
    from wa_export.export.results import SilentObserver

    if output.json_output:
        yield SilentObserver()
    elif output.interactive:
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), _CountColumn(), TimeElapsedColumn())
        with Progress(*columns, console=output.console, transient=True) as progress:
            yield _ProgressObserver(progress)
    else:
        yield _PlainObserver(output, export_dir)


def render_run_warnings(output: Output, warnings: Sequence[Any]) -> None:
    for warning in warnings:  # one greppable line each, on a terminal and under cron alike
        output.log("WARNING", warning.message)


def render_workers(output: Output, merged: WorkersResult, settings: Settings, *, emails: bool = True) -> None:
    if json_or(output, merged.as_dict()):
        return
    from wa_export.export.results import WorkspaceResult

    # The children's output is captured: each workspace is shown here, as a single-process run shows it.
    if output.interactive:
        _render_export_table(output, merged.workspaces, settings)
    else:  # the lines a single run logs: the folder its relative file paths are in, then one per workspace
        plain = _PlainObserver(output, settings.export_dir)
        workspaces = merged.workspaces
        workers = count_noun(merged.count, "worker")
        output.log(
            "INFO",
            f"scheduled export run with {workers}: {count_noun(len(workspaces), 'workspace')}, files in {settings.export_dir}",
        )
        for result in workspaces:
            plain.workspace_finished(result)
    dry_run = any(worker.document.get("dry_run") for worker in merged.workers)
    for worker, run in zip(merged.workers, merged.as_dict()["runs"], strict=True):
        summary = run["summary"]
        if dry_run and summary:  # the child's JSON summary counts what it did (nothing): say what it would do
            document = worker.document
            workspaces = [WorkspaceResult.from_dict(ws) for ws in document.get("workspaces", [])]
            anomalies, problems = document.get("anomalies") or {}, document.get("problems") or []
            interrupted = bool(document.get("interrupted"))
            summary = dry_run_summary(
                "scheduled export run (dry run)", workspaces, anomalies, interrupted, problems, emails=emails
            )
        output.line(f"worker {run['slot']}: exit {run['exit_code']}: {summary or run['error']}")
    render_run_warnings(output, merged.warnings)
    summary = merged.summary()
    if dry_run:
        header = f"scheduled export run with {count_noun(merged.count, 'worker')} (dry run)"
        summary = dry_run_summary(
            header, merged.workspaces, merged.anomaly_totals(), merged.interrupted, merged.problems, emails=emails
        )
    output.summary(summary, merged.exit_code)


def render_export(output: Output, result: RunResult, settings: Settings, *, emails: bool = True) -> None:
    if not json_or(output, {"ok": result.exit_code == ExitCode.OK, **result.as_dict()}):
        if output.interactive:
            _render_export_table(output, result.workspaces, settings)
        render_run_warnings(output, result.warnings)
        summary = result.summary()
        if result.dry_run:
            header = f"{result.trigger} export run (dry run)"
            summary = dry_run_summary(
                header, result.workspaces, result.anomaly_totals(), result.interrupted, result.problems, emails=emails
            )
        output.summary(f"{summary} (run {result.run_id})", result.failed)
    for failed in result.workspaces:  # on stderr (with --json too), already redacted
        if failed.traceback:
            output.stderr(
                f"internal error in workspace {failed.workspace_id} ({failed.workspace_name}), "
                f"please report it with this traceback:\n{failed.traceback.rstrip()}"
            )


def dry_run_summary(
    header: str,
    workspaces: Sequence[WorkspaceResult],
    anomalies: Mapping[str, int],
    interrupted: bool,
    problems: Sequence[str],
    *,
    emails: bool = True,  # False: --no-email, the run would write workbooks and send none
) -> str:
    """What the real run would send: its emails, workspaces and messages; a failed workspace's messages are
    waiting, not to be sent, and a skipped one's were never counted."""
    outcomes = Counter(workspace.outcome for workspace in workspaces)
    would = [workspace for workspace in workspaces if workspace.outcome == "dry_run"]
    # A workspace the run would email has its recipients; a part is one email (a manual export sends one).
    emailed = [workspace for workspace in would if emails and workspace.recipients]
    written_only = len(would) - len(emailed)
    not_sent = sum(workspace.message_count for workspace in workspaces if workspace.outcome == "failed")
    parts = [
        f"{header}: {count_noun(len(workspaces), 'workspace')}",
        f"would send {count_noun(sum(max(w.parts, 1) for w in emailed), 'email')} "
        f"for {count_noun(len(emailed), 'workspace')}",
        *(
            [f"would write the workbooks of {count_noun(written_only, 'workspace')} without emailing"]
            if written_only
            else []
        ),
        f"{count_noun(sum(workspace.message_count for workspace in would), 'message')} to send",
        f"{outcomes['no_messages']} without new messages",
        *([f"{outcomes['not_due']} not due"] if outcomes["not_due"] else []),
        f"{outcomes['skipped']} skipped (messages not counted)" if outcomes["skipped"] else "0 skipped",
        f"{outcomes['failed']} failed" + (f" ({count_noun(not_sent, 'message')} not to be sent)" if not_sent else ""),
        *problems,
    ]
    if anomalies:
        parts.append("data issues: " + ", ".join(f"{number} {name}" for name, number in sorted(anomalies.items())))
    if interrupted:
        parts.append("interrupted before finishing")
    return ", ".join(parts) + "; nothing was written or sent"


def _message_count(result: WorkspaceResult, number_format: str) -> str:
    """Its messages, or NOT_COUNTED for a workspace skipped or refused before counting ("0" would claim
    nothing is waiting)."""
    uncounted = result.message_count == 0 and result.outcome in ("skipped", "failed", "not_due")
    return NOT_COUNTED if uncounted else number_format.format(result.message_count)


def _render_export_table(output: Output, results: Sequence[WorkspaceResult], settings: Settings) -> None:
    export_dir = settings.export_dir
    with_files = _export_table(results, settings)
    # What must show unbroken: ids, file paths, and path- or variable-like words of reasons.
    keep_whole = [result.workspace_id for result in results]
    for result in results:
        keep_whole.append(display_path(result.file_path, export_dir))
        keep_whole += unbreakable_words(result.reason)
    if output.fits(with_files, keep_whole):
        output.table(with_files)
        if any(result.file_path for result in results):
            output.line(f"Files are in {export_dir}.")
        return
    # Too narrow for the paths: the table without them, then one unwrapped line per file or reason.
    output.table(_export_table(results, settings, with_detail=False), [r.workspace_id for r in results])
    details = [(result, detail) for result in results if (detail := _detail(result, export_dir))]
    if details:
        output.line(f"Files (in {export_dir}) and reasons:")
        for result, detail in details:
            output.line(f"  {result.workspace_name or '(unnamed)'} ({result.workspace_id}): {detail}")


def _detail(result: WorkspaceResult, export_dir: Path) -> str:
    return " ".join(part for part in (display_path(result.file_path, export_dir), result.reason or "") if part)


def _export_table(results: Sequence[WorkspaceResult], settings: Settings, *, with_detail: bool = True) -> Table:
    table = Table(title="wa-export", show_lines=False)
    # As wide as the longest id, so an id (on its own line under the name) fits whole when anything can.
    table.add_column("Workspace", overflow="fold", min_width=max((len(r.workspace_id) for r in results), default=10))
    table.add_column("Outcome", no_wrap=True)
    table.add_column("Messages", justify="right", no_wrap=True)
    table.add_column(f"Window ({settings.timezone_name})", overflow="fold")  # the table's one zone, named once
    if with_detail:
        table.add_column("File / reason", overflow="fold")
    for result in results:
        window = ""
        if result.window_start and result.window_end:
            window = f"{local_time(result.window_start, settings)} → {local_time(result.window_end, settings, '%H:%M')}"
        cells = [
            workspace_cell(result.workspace_name, result.workspace_id),
            outcome_cell(result.outcome),
            _message_count(result, "{:,}"),
            window,
        ]
        if with_detail:
            cells.append(escape(_detail(result, settings.export_dir)))
        table.add_row(*cells)
    return table


def render_demo(output: Output, result: DemoResult) -> None:
    if json_or(output, result.as_dict()):
        return
    run = result.run
    if output.interactive:
        table = Table(title="wa-export demo")
        table.add_column("Workspace", overflow="fold")
        table.add_column("Outcome", no_wrap=True)
        table.add_column("Messages", justify="right", no_wrap=True)
        table.add_column("Workbook (in the exports folder)", overflow="fold")
        paths = [display_path(workspace.file_path, result.exports_dir) for workspace in run.workspaces]
        for workspace, path in zip(run.workspaces, paths, strict=True):
            table.add_row(
                escape(workspace.workspace_name),
                outcome_cell(workspace.outcome),
                f"{workspace.message_count:,}",
                escape(path or workspace.reason or ""),
            )
        output.table(table, keep_whole=paths)
    output.line(run.summary())
    output.line(f"Workbooks ({len(result.workbooks)}) in {result.exports_dir}:")
    for workbook in result.workbooks:
        output.line(f"  {display_path(workbook, result.exports_dir)}")
    output.line(f"Emails ({len(result.emails)}) as .eml files in {result.mail_dir}:")
    for email in result.emails:
        output.line(f"  {display_path(email, result.mail_dir)}")
    if result.env_file is None:
        output.line(
            "Both local servers are stopped. Next: `wa-export demo --serve` (`./dev demo --serve` in a clone) keeps "
            "them running to try every other command on this data."
        )
        return
    _render_demo_serving(output, result)


# What to try while `demo --serve` runs.
DEMO_COMMANDS = ("health", "stats", "logs", "state", "export --hours 1 --email you@example.com")


def _render_demo_serving(output: Output, result: DemoResult) -> None:
    """The servers' settings (the password masked: it is in the 0600 file) and the commands to try."""
    from wa_export.settings import RULE_OF

    output.line(f"The servers keep running. Their settings, also in {result.env_file} (mode 0600):")
    for name, value in result.environ.items():
        secret = name in RULE_OF and RULE_OF[name].secrecy == "value"
        output.line(f"  {name}={'******** (in the file)' if secret and value else value}")
    output.line("From another terminal, try:")
    for command in DEMO_COMMANDS:
        output.line(f"  {_program()} --env-file {result.env_file} {command}")
    output.line("Ready. Ctrl-C stops the servers.")


def _program() -> str:
    """How another terminal runs this wa-export: its name when on PATH, else the path it was started by."""
    if shutil.which("wa-export"):
        return "wa-export"
    started_as = Path(sys.argv[0])
    if started_as.name == "wa-export" and started_as.exists():
        return shlex.quote(str(started_as.resolve()))
    return shlex.quote(sys.executable) + " -m wa_export"


# --------------------------------------------------------------------------- deploy

# After `deploy KIND --to DIR`: the commands that put the written files to use.
DEPLOY_NEXT_STEPS = {
    "systemd": "Next: sudo systemctl daemon-reload && sudo systemctl enable --now "
    "wa-export.timer wa-export-cleanup.timer wa-export-health.timer",
    "cron": "Next, as root: crontab -u wa-export {directory}/wa-export.crontab",
    "logrotate": "Next: sudo logrotate -d /etc/logrotate.d/wa-export (a dry run of the rotation)",
    "env": "Next: copy env.example to your env file, fill in the placeholders, chmod 600 it, "
    "then run wa-export --env-file FILE config",
}


def render_deploy(output: Output, result: DeployResult) -> None:
    if json_or(output, result.as_dict()):
        return
    if result.directory is None:
        # As shipped, ready for `> file` or `| sudo tee`; several files each after a header comment.
        for number, file in enumerate(result.files):
            if len(result.files) > 1:
                output.line(f"{'' if number == 0 else chr(10)}# ---- {file.name} ----")
            output.line(file.text.rstrip("\n"))
        return
    for path in result.written:
        output.line(f"wrote {path}")
    for path in result.unchanged:
        output.line(f"unchanged {path} (already as shipped)")
    kinds = {file.kind for file in result.files}
    if len(kinds) == 1:
        output.line(DEPLOY_NEXT_STEPS[kinds.pop()].format(directory=result.directory))


# --------------------------------------------------------------------------- cleanup, config, health, test-email


def render_cleanup(output: Output, result: CleanupResult, settings: Settings) -> None:
    if not json_or(output, {"ok": result.exit_code == ExitCode.OK, **result.as_dict()}):
        if not output.interactive:  # under cron the log is the audit trail: one line per file
            verb, removed = ("would delete", "would remove") if result.dry_run else ("deleted", "removed")
            for item in result.files:
                output.log(
                    "INFO", f"{verb} {item.kind} {display_path(item.path, settings.export_dir)} size={item.size}"
                )
            for folder in result.folders_removed:
                output.log("INFO", f"{removed} empty folder {display_path(folder, settings.export_dir)}")
        elif result.files:
            _render_cleanup_table(output, result, settings)
        for error in result.errors:
            output.log("ERROR", error)
        output.summary(result.summary(), result.exit_code)
    if result.event_error is not None:
        # stderr keeps --json stdout a single document; the event is part of the job (exit 3).
        output.stderr(
            f"the files were cleaned, but the cleanup event could not be recorded in system_logs: {result.event_error}"
        )


def _render_cleanup_table(output: Output, result: CleanupResult, settings: Settings) -> None:
    title = f"wa-export cleanup{' (dry run)' if result.dry_run else ''}, file times in {settings.timezone_name}"
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("Folder", overflow="fold")
    table.add_column("Files", justify="right", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    for column in ("Oldest", "Newest", "Removed"):
        table.add_column(column, no_wrap=True)
    folders: dict[str, list[CleanupFile]] = {}
    for item in result.files:
        folders.setdefault(item.folder, []).append(item)
    shown: list[str] = []
    for index, (folder, items) in enumerate(sorted(folders.items())):
        if index == CLEANUP_TABLE_ROWS:
            table.add_row(f"… and {count_noun(len(folders) - index, 'more folder')} (--json lists every file)")
            break
        times = [item.modified_at for item in items]
        shown.append(display_path(folder, settings.export_dir))
        table.add_row(
            escape(shown[-1]),
            str(len(items)),
            format_bytes(sum(item.size for item in items)),
            short_time(min(times), settings),
            short_time(max(times), settings),
            "yes" if folder in result.folders_removed else "",
        )
    output.table(table, keep_whole=shown)


def render_config(output: Output, report: ConfigReport) -> None:
    """The tables, one `INVALID` line per problem and a sentence on stderr, for a CI log."""
    if not json_or(output, report.as_dict()):
        where = f".env file {report.env_file}" if report.env_file is not None else "no .env file"
        output.table(_settings_table(f"wa-export settings (environment, {where})", report.settings))
        if report.workspace_addresses:
            output.table(_settings_table("WORKSPACE_<ID>_EMAIL and _WORKBOOK_PASSWORD", report.workspace_addresses))
        if report.workspace_settings:
            output.table(_settings_table("WORKSPACE_<ID>_TIMEZONE and _SCHEDULE", report.workspace_settings))
        for problem in report.problems:
            output.line(f"INVALID {problem.variable}: {problem.message}")
        for name in sorted({*report.unknown_variables, *report.misspelt_variables}):
            meant = report.misspelt_variables.get(name)
            advice = f"; did you mean {meant}?" if meant else " (a typo?)"
            output.line(f"WARNING {name} is not a wa-export setting and is ignored{advice}")
        output.line(report.summary())
    for warning in report.warnings:
        output.stderr(f"warning: {warning}")
    if report.problems:
        count = len(report.problems)
        output.stderr(
            f"{count} setting{'s are' if count != 1 else ' is'} invalid "
            f"({report.problem_variables}); "
            f"fix {'them' if count != 1 else 'it'} before enabling the timer."
        )


def _settings_table(title: str, lines: list[SettingLine]) -> Table:
    table = Table(title=escape(title))
    for column in ("Variable", "Value", "Source", "Status"):
        table.add_column(column, overflow="fold")
    for line in lines:
        status = "[bold red]invalid[/bold red]" if line.problem else "[green]ok[/green]"
        table.add_row(escape(line.variable), escape(line.value or "(not set)"), escape(line.source), status)
    return table


def render_health(output: Output, report: HealthReport, settings: Settings) -> None:
    if json_or(output, report.as_dict()):
        return
    if not output.interactive:
        for check in report.checks:  # under cron: one greppable line per check
            output.log(f"{check.status:<7}", f"{check.name}: {check.reason}")
        output.summary(report.summary(), report.exit_code)
        return
    table = Table(title="wa-export health")
    for column in ("Check", "Status", "Reason"):
        table.add_column(column, overflow="fold")
    for check in report.checks:
        table.add_row(check.name, styled(check.status, HEALTH_STYLE.get(check.status, "")), escape(check.reason))
    output.table(table)
    for check in report.checks:  # unwrapped, so they can be copied into mongosh
        for command in check.details.get("commands", []):
            output.line(command)
    output.line(report.summary())


def render_test_email(output: Output, result: TestEmailResult, settings: Settings) -> None:
    json_or(output, result.as_dict())
    to = ", ".join(result.recipients)
    if result.error is not None:
        # No address when the workspace's only one was refused: the reason names the variable.
        target = f" to {to}" if to else ""
        output.stderr(f"test email{target} failed at step {result.error.step}: {result.error}")
    elif not output.json_output:
        output.log(
            "INFO", f"test email sent to {to} via {result.server} ({result.security}) with {result.attachment} attached"
        )


# --------------------------------------------------------------------------- logs, stats


# `logs --system` names each event for what it is; event_type alone says "success" for a run.
EVENT_NAMES = {
    "export_run": "export run",
    "cleanup": "cleanup",
    "cursor_move": "cursor moved",
    "health_check": "health check",
}


def _event_name(entry: SystemLogEntry) -> str:
    name = EVENT_NAMES.get(entry.kind, entry.kind or entry.event_type)
    return f"{name} (failed)" if entry.event_type == "error" and entry.kind else name


def render_logs(output: Output, report: LogsReport, settings: Settings) -> None:
    if json_or(output, {"ok": True, **report.as_dict()}):
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
            event = styled(escape(_event_name(entry)), "bold red" if entry.event_type == "error" else "")
            table.add_row(local_time(entry.time, settings, "%Y-%m-%d %H:%M:%S"), event, escape(entry.message))
        output.table(table, [word for entry in report.system_entries for word in unbreakable_words(entry.message)])
        return
    if not report.export_entries:
        output.line("No export logs match." if report.status or report.workspace_id else "No export logs yet.")
        return
    # Plain output (cron, pipes) is never wrapped: it always has room for the file name.
    with_file = not output.interactive or output.console.width >= WIDE_LOGS
    table = Table(title=f"Exports, newest first (times in {zone})", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Time", no_wrap=True)
    table.add_column("Id", no_wrap=True)  # whole, to paste into `wa-export resend`
    table.add_column("Workspace", overflow="fold", min_width=10)
    table.add_column("Run", no_wrap=True)
    table.add_column("Window", no_wrap=True)
    table.add_column("Msgs", justify="right")
    table.add_column("Status", no_wrap=True)
    if with_file:
        table.add_column("File", no_wrap=True)
    table.add_column("Recipients / error", overflow="fold", min_width=20)
    # Entry ids, workspace ids shown instead of a name, file paths, and the ids and variable names of an error.
    keep_whole: list[str] = []
    for export in report.export_entries:
        window = ""
        if export.window_start and export.window_end:
            window = f"{local_time(export.window_start, settings, '%H:%M')}–{local_time(export.window_end, settings, '%H:%M')}"
        detail = f"[red]{escape(export.error)}[/red]" if export.error else escape(export.recipients)
        keep_whole.append(export.id)
        if not export.workspace_name:
            keep_whole.append(export.workspace_id)
        keep_whole += unbreakable_words(export.error or export.recipients)
        cells = [
            short_time(export.time, settings),
            export.id,
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


def bar(value: int, maximum: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar scaled to `maximum`, in eighths of a character so small days still show."""
    if maximum <= 0 or value <= 0:
        return ""
    full, rest = divmod(max(1, round(value / maximum * width * 8)), 8)
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


def render_stats(output: Output, report: StatsReport, settings: Settings) -> None:
    if json_or(output, {"ok": True, **report.as_dict()}):
        return
    period = report.period
    span = f"{period.days[0]:%Y-%m-%d} – {period.days[-1]:%Y-%m-%d} ({period.timezone_name})"
    (_render_workspace_stats if report.single else _render_stats_overview)(output, report, settings, span)


def _render_workspace_stats(output: Output, report: StatsReport, settings: Settings, span: str) -> None:
    from wa_export.export.email_text import status_sentence
    from wa_export.export.rows import STATUSES
    from wa_export.recipients import describe_recipients

    stats = report.workspaces[0]
    # The Status values as the workbook's column and the email name them, then any other seen (unknown).
    statuses = list(STATUSES)
    statuses += [s for s in sorted({s for day in stats.per_day for s in day.counts}) if s not in statuses]
    rows: list[tuple[str, dict[str, int], int]] = []
    chunks = _chunks(len(stats.per_day), STATS_MAX_ROWS)
    for start, end in chunks:
        days = stats.per_day[start:end]
        label = f"{days[0].day:%a %Y-%m-%d}" if len(days) == 1 else f"{days[0].day:%Y-%m-%d} +{len(days) - 1}d"
        counts = {status: sum(day.counts.get(status, 0) for day in days) for status in statuses}
        rows.append((label, counts, sum(counts.values())))
    size = chunks[0][1] - chunks[0][0]
    per = "day" if size == 1 else count_noun(size, "day")
    table = Table(
        title=escape(f"{stats.workspace.name or '(unnamed)'} ({stats.workspace.id}): messages per {per}, {span}"),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("Day" if per == "day" else "Days", no_wrap=True)
    for status in statuses:
        table.add_column(status, justify="right")
    table.add_column("Total", justify="right")
    table.add_column("Trend", no_wrap=True)
    top = max((total for _, _, total in rows), default=0)
    for label, counts, total in rows:
        table.add_row(label, *(str(counts[status]) for status in statuses), str(total), styled(bar(total, top), "cyan"))
    table.add_section()
    table.add_row("Total", *(str(stats.totals.get(status, 0)) for status in statuses), str(stats.total), "")
    output.table(table)
    output.line(status_sentence(statuses))
    exports = stats.exports
    output.line(
        f"Exports in these days: {exports.completed} completed ({count_noun(exports.messages_exported, 'message')}), "
        f"{exports.failed} failed"
        + (f" (last failure {local_time(exports.last_failure, settings)})" if exports.last_failure else "")
        + f"; last success: {local_time(exports.last_success, settings) or 'never'}."
    )
    if stats.workspace.status != "active":
        output.line(f"Workspace status is {stats.workspace.status!r}: scheduled runs skip it.")
    output.line(describe_recipients(stats.recipients, stats.workspace.id, settings) + ".")
    zone, schedule = stats.time_zone, stats.schedule
    output.line(
        f"Time zone: {zone.value or 'invalid'} (from the {zone.where}); "
        f"schedule: {schedule.value or 'invalid'} (from the {schedule.where})"
        + "".join(f"; {problem.rstrip('.')}" for problem in (zone.problem, schedule.problem) if problem)
        + "."
    )
    password = stats.password
    if password.problem is not None:
        output.line(f"Workbooks: not exported, {password.problem}")
    else:
        output.line(
            f"Workbooks: password-protected (password from {password.where})."
            if stats.encrypted
            else "Workbooks: not password-protected."
        )


def _render_stats_overview(output: Output, report: StatsReport, settings: Settings, span: str) -> None:
    from wa_export.recipients import address_label

    workspaces = report.workspaces
    if not workspaces:
        output.line(f"No active workspaces ({span}).")
        return
    chunks = _chunks(len(report.period.days), SPARK_MAX_WIDTH)
    name_id_separator = "\n" if output.interactive else " "  # plain output: one line per workspace

    def trend(stats: WorkspaceStats) -> str:
        totals = [day.total for day in stats.per_day]
        return sparkline([sum(totals[start:end]) for start, end in chunks])

    def address(stats: WorkspaceStats) -> str:
        label = address_label(stats.recipients)
        return styled(label, ADDRESS_STYLE.get(label, ""))

    # Short headers: with a week's trend the table fits 80 columns.
    columns: list[tuple[Column, Callable[[WorkspaceStats], str]]] = [
        (
            Column("Workspace / id", overflow="fold", min_width=24),
            lambda stats: workspace_cell(stats.workspace.name, stats.workspace.id, name_id_separator),
        ),
        (Column("Msgs", justify="right"), lambda stats: str(stats.total)),
        (Column("Trend", no_wrap=True), trend),
        (Column("Sent", justify="right"), lambda stats: str(stats.exports.completed)),
        (Column("Failed", justify="right"), lambda stats: _count_cell(stats.exports.failed)),
        (Column("Last sent", no_wrap=True), lambda stats: short_time(stats.exports.last_success, settings) or "never"),
        (Column("Addr"), address),
    ]
    table = column_table(workspaces, columns, title=f"Active workspaces, {span}", box=box.SIMPLE_HEAD, pad_edge=False)
    output.table(table, keep_whole=[stats.workspace.id for stats in workspaces])
    missing = sum(1 for stats in workspaces if not stats.address_configured)
    refused = sum(1 for stats in workspaces if stats.recipients.problem)
    output.line(
        f"{count_noun(len(workspaces), 'active workspace')}, {count_noun(sum(s.total for s in workspaces), 'message')}, "
        f"{count_noun(sum(s.exports.completed for s in workspaces), 'export')}, "
        f"{sum(s.exports.failed for s in workspaces)} failed, {missing} without an address"
        + (f", {refused} with a refused address (bad)" if refused else "")
        + f", {sum(1 for s in workspaces if s.encrypted)} with password-protected workbooks"
        + ". Details: wa-export stats WORKSPACE_ID."
    )


# --------------------------------------------------------------------------- resend, verify


def render_resend(output: Output, result: ResendResult, settings: Settings) -> None:
    original = result.original
    what = (
        f"export {original.id} of {result.workspace_name or original.workspace_id} "
        f"({local_time(original.export_time, settings, zoned=True)}{_part(original)})"
    )
    to = ", ".join(result.recipients)
    if result.error is not None:
        json_or(output, result.as_dict())
        output.stderr(f"re-sending {what} to {to} failed: {result.error}")
        return
    if json_or(output, result.as_dict()):
        return
    messages = count_noun(result.message_count, "message")
    if result.dry_run:
        output.log("INFO", f"dry run: would re-send {what} to {to}: {messages}; nothing was written or sent")
    else:
        file = display_path(result.file_path, settings.export_dir)
        output.log("INFO", f"re-sent {what} to {to}: {messages} in {file}; recorded as export {result.log_id}")
    if result.count_difference is not None:
        output.log("WARNING", result.count_difference)


def render_verify(output: Output, report: VerifyReport, settings: Settings) -> None:
    file = f"{report.path} ({format_bytes(report.file.size)}, SHA-256 {report.file.sha256})"
    if not report.found:
        json_or(output, report.as_dict())
        output.stderr(f"{file}: {report.as_dict()['error']}")
        return
    if json_or(output, report.as_dict()):
        return
    output.line(f"File: {file}")
    for entry in report.entries:
        output.line(_ledger_entry_lines(entry, settings))


def _part(entry: LedgerEntry) -> str:
    return f", part {entry.part} of {entry.parts}" if entry.parts and entry.parts > 1 else ""


def _ledger_entry_lines(entry: LedgerEntry, settings: Settings) -> str:
    from wa_export.store.arrivals import key_text

    recorded = entry.recorded_range
    between = f"from {_moment(entry.window_start, settings)} to {_moment(entry.window_end, settings)}"
    if recorded is None:
        held = "no range recorded"
    elif recorded.kind == "arrival":
        held = f"arrived {between} (arrival keys {key_text(recorded.low)} to {key_text(recorded.high)})"
    else:
        held = f"timestamped {between}"
    resent = f", a resend of export {entry.resend_of}" if entry.resend_of is not None else ""
    lines = [
        f"Export {entry.id} ({entry.status}, {entry.trigger or 'original service'}{_part(entry)}{resent})",
        f"  Workspace: {entry.workspace_name or '(unnamed)'} ({entry.workspace_id})",
        f"  Sent: {_moment(entry.sent_at, settings)} to {', '.join(entry.recipients) or '(nobody recorded)'}",
        f"  Messages: {entry.message_count}, {held}",
        f"  File name: {entry.file_name or '(not recorded)'}",
    ]
    return "\n".join(lines)


def _moment(moment: datetime | None, settings: Settings) -> str:
    """A time to the second with its zone's name, or "?" when the entry has none."""
    return local_time(moment, settings, SECOND_FORMAT, zoned=True) or "?"


# --------------------------------------------------------------------------- state


def render_state(output: Output, report: StateReport, settings: Settings) -> None:
    if json_or(output, {"ok": True, **report.as_dict()}):
        return
    if not report.workspaces:
        output.line("No active workspaces.")
        return
    if output.interactive:
        output.table(_state_table(report, settings))
        if report.waiting_count_cap is not None and any(w.waiting and w.waiting.capped for w in report.workspaces):
            output.line(f"Counts stop at {report.waiting_count_cap}; wa-export state WORKSPACE_ID counts exactly.")
        return
    for workspace in report.workspaces:  # under cron, a pipe: one greppable line per workspace
        output.log("INFO", "state " + " ".join(_plain_fields(workspace, settings)))


def render_move(output: Output, move: CursorMove, settings: Settings) -> None:
    from wa_export.store.arrivals import key_text

    if json_or(output, {"ok": True, **move.as_dict()}):
        return
    if move.direction == "already_past":
        where = f"{_zoned_time(move.new_time, settings)} (key {key_text(move.new_key)})"
        output.line(
            f"Workspace {move.workspace_id}: message {move.past_message_id} (arrived {_zoned_time(move.requested_time, settings)}) "
            f"is already behind the delivery position {where}: it was delivered or skipped before; nothing was moved."
        )
        return
    old = (
        f"{_zoned_time(move.old_time, settings)} (key {key_text(move.old_key)}, {move.old_source or 'unknown source'})"
        if move.old_key is not None
        else "no cursor"
    )
    new = f"{_zoned_time(move.new_time, settings)} (key {key_text(move.new_key)})"
    consequence = {
        "back": "the next scheduled run delivers again what arrived from then on",
        "forward": "what arrived before then will not be delivered",
        "unchanged": "the cursor was already there",
        "created": "the next scheduled run starts there",
    }[move.direction]
    if move.past_message_id is not None:
        consequence = (
            f"message {move.past_message_id} (arrived {_zoned_time(move.requested_time, settings)}) will not be delivered; "
            "what arrived after it, in the same second too, will"
        )
    change = (
        f"cursor created at {new}" if move.old_key is None else f"cursor moved {move.direction} from {old} to {new}"
    )
    output.line(f"Workspace {move.workspace_id}: {change}: {consequence}.")
    after = move.state_after
    if after is not None and after.waiting is not None:
        age = _oldest_age(after)
        oldest = f", the oldest arrived {age} ago" if age else ""
        output.line(f"Messages waiting from the new cursor: {_waiting_count(after)}{oldest}.")
    output.line(f"Recorded in system_logs (host {move.host}); see wa-export logs --system.")


def _state_table(report: StateReport, settings: Settings) -> Table:
    title = f"Delivery state, times in {report.timezone_name} (database clock {_time(report.database_now, settings)})"

    def waiting(workspace: WorkspaceReport) -> str:
        age = _oldest_age(workspace)
        return _waiting_count(workspace) + (f"\n[dim]{age}[/dim]" if age else "")

    def lease(workspace: WorkspaceReport) -> str:
        if not workspace.lease_held:
            return "free"
        return f"[yellow]held[/yellow]\n[dim]to {local_time(workspace.lease_expires_at, settings, '%H:%M')}[/dim]"

    columns: list[tuple[Column, Callable[[WorkspaceReport], str]]] = [
        (
            Column("Workspace / id", overflow="fold", min_width=24),
            lambda workspace: workspace_cell(workspace.workspace_name, workspace.workspace_id),
        ),
        (Column("Cursor", no_wrap=True), lambda workspace: _cursor_cell(workspace, settings)),
        (Column("Waiting\n(oldest)", justify="right", no_wrap=True), waiting),
        (Column("Schedule", no_wrap=True), lambda workspace: _schedule_cell(workspace, report, settings)),
        (Column("Lease", no_wrap=True), lease),
        (Column("Last success", no_wrap=True), lambda w: short_time(w.last_success_at, settings) or "never"),
        (Column("Fails", justify="right", no_wrap=True), lambda w: _count_cell(w.consecutive_failures)),
        (Column("Notes", overflow="fold", min_width=16), lambda w: escape("; ".join(_notes(w, settings)))),
    ]
    return column_table(report.workspaces, columns, title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)


def _count_cell(failures: int) -> str:
    return styled(str(failures), "bold red" if failures else "")


def _cursor_cell(workspace: WorkspaceReport, settings: Settings) -> str:
    if workspace.has_cursor:
        text = f"{short_time(workspace.cursor_time, settings)}\n[dim]{escape(workspace.cursor_source or 'unknown source')}[/dim]"
        if workspace.cursor_ahead_of_database_clock:
            text = f"[bold red]{text}[/bold red]"
        return text
    if workspace.legacy_watermark is not None:
        return f"{short_time(workspace.legacy_watermark, settings)}\n[dim]v1 watermark[/dim]"
    return "[yellow]none[/yellow]"


def _schedule_cell(workspace: WorkspaceReport, report: StateReport, settings: Settings) -> str:
    """Its schedule (and zone, when its own), then when the next scheduled run delivers it."""
    if workspace.setting_problem:
        return "[red]invalid[/red]"
    zone = f" {workspace.time_zone}" if workspace.time_zone != report.timezone_name else ""
    if workspace.schedule == "off":
        when = "manual only"
    elif workspace.due:
        when = "due"
    else:
        when = f"next {short_time(workspace.next_due_at, settings)}"
    return f"{escape(workspace.schedule + zone)}\n[dim]{when}[/dim]"


def _notes(workspace: WorkspaceReport, settings: Settings) -> list[str]:
    notes = []
    if workspace.cursor_ahead_of_database_clock:
        notes.append("cursor ahead of the database clock")
    if workspace.legacy_watermark is not None:
        notes.append("becomes a cursor on the next run")
    elif not workspace.has_cursor and workspace.first_cursor is not None:
        starts_at = workspace.next_run_starts_at
        notes.append(
            f"next run starts {short_time(starts_at, settings)} (original service)"
            if starts_at is not None
            else f"next run starts {settings.export_interval_minutes} min before its end"
        )
    if workspace.in_flight:
        part, parts = workspace.in_flight.get("part"), workspace.in_flight.get("parts")
        started = workspace.in_flight.get("started_at")
        notes.append(
            "in flight"
            + (f" part {part}/{parts}" if part is not None and parts is not None else "")
            + (f" since {short_time(started, settings)}" if isinstance(started, datetime) else "")
        )
    if workspace.last_possible_duplicate_at is not None:
        notes.append(f"possible duplicate {short_time(workspace.last_possible_duplicate_at, settings)}")
    if workspace.consecutive_failures and workspace.last_error:
        notes.append(workspace.last_error)
    if workspace.setting_problem:
        notes.append(workspace.setting_problem)
    return notes


def _no_cursor_text(workspace: WorkspaceReport, settings: Settings) -> str:
    if workspace.legacy_watermark is not None:
        return (
            f"v1 watermark {_time(workspace.legacy_watermark, settings)}: the next scheduled run turns it into a cursor"
        )
    first, starts_at = workspace.first_cursor, workspace.next_run_starts_at
    if starts_at is not None:
        return (
            f"no cursor yet: the next scheduled run starts at {_time(starts_at, settings)} "
            "(where the original service's last export ended)"
        )
    if first is not None:
        return (
            "no cursor yet: the next scheduled run starts "
            f"{settings.export_interval_minutes} min (EXPORT_INTERVAL_MINUTES) before its own end"
        )
    return "no cursor yet"


def _plain_fields(workspace: WorkspaceReport, settings: Settings) -> list[str]:
    from wa_export.store.arrivals import key_text

    fields = [
        f"workspace={workspace.workspace_id}",
        f"name={json.dumps(workspace.workspace_name, ensure_ascii=False)}",
    ]
    if workspace.has_cursor:
        fields += [
            f"cursor={_iso_local(workspace.cursor_time, settings)}",
            f"cursor_key={key_text(workspace.cursor_key)}",
            f"cursor_source={workspace.cursor_source or 'unknown'}",
        ]
        if workspace.cursor_ahead_of_database_clock:
            fields.append("cursor_ahead_of_database_clock=true")
    else:
        fields.append("cursor=none")
        if workspace.legacy_watermark is not None:
            fields.append(f"legacy_watermark={_iso_local(workspace.legacy_watermark, settings)}")
        fields.append(f"note={json.dumps(_no_cursor_text(workspace, settings), ensure_ascii=False)}")
    fields.append(f"waiting={_waiting_count(workspace) if workspace.waiting else 'unknown'}")
    fields += [f"schedule={workspace.schedule or 'invalid'}", f"time_zone={workspace.time_zone or 'invalid'}"]
    if workspace.next_due_at is not None:
        fields.append(f"next_due={_iso_local(workspace.next_due_at, settings)}")
    if workspace.oldest_waiting_age_seconds is not None and workspace.waiting is not None:
        fields.append(f"oldest_waiting={_iso_local(workspace.waiting.oldest_at, settings)}")
        fields.append(f"oldest_waiting_age_seconds={int(workspace.oldest_waiting_age_seconds)}")
    if workspace.lease_held:
        fields += [
            f"lease=held lease_owner={workspace.lease_owner}",
            f"lease_expires={_iso_local(workspace.lease_expires_at, settings)}",
        ]
    else:
        fields.append("lease=free")
    fields += [
        f"last_success={_iso_local(workspace.last_success_at, settings) or 'never'}",
        f"consecutive_failures={workspace.consecutive_failures}",
    ]
    if workspace.last_error:
        fields.append(f"last_error={json.dumps(workspace.last_error, ensure_ascii=False)}")
    if workspace.last_possible_duplicate_at is not None:
        fields.append(f"last_possible_duplicate={_iso_local(workspace.last_possible_duplicate_at, settings)}")
    if workspace.in_flight:
        fields.append(f"in_flight={json.dumps(_in_flight_text(workspace.in_flight, settings), ensure_ascii=False)}")
    return fields


def _waiting_count(workspace: WorkspaceReport) -> str:
    waiting = workspace.waiting
    if waiting is None:
        return "—"
    return f"{waiting.count}+" if waiting.capped else str(waiting.count)


def _oldest_age(workspace: WorkspaceReport) -> str:
    age = workspace.oldest_waiting_age_seconds
    return "" if age is None else format_age(timedelta(seconds=age))


def _in_flight_text(in_flight: Mapping[str, Any], settings: Settings) -> str:
    from wa_export.store.arrivals import time_of

    parts = []
    part, total = in_flight.get("part"), in_flight.get("parts")
    if part is not None and total is not None:
        parts.append(f"part {part} of {total}")
    low, high = time_of(in_flight.get("from_key")), time_of(in_flight.get("to_key"))
    if low is not None and high is not None:
        parts.append(f"arrivals {_time(low, settings)} to {_time(high, settings)}")
    if in_flight.get("run_id"):
        parts.append(f"run {in_flight['run_id']}")
    started = in_flight.get("started_at")
    if isinstance(started, datetime):
        parts.append(f"since {_time(started, settings)}")
    return ", ".join(parts) or "yes"


def _time(moment: datetime | None, settings: Settings) -> str:
    return local_time(moment, settings, SECOND_FORMAT)


def _zoned_time(moment: datetime | None, settings: Settings) -> str:
    """For a sentence that states no zone of its own."""
    return local_time(moment, settings, SECOND_FORMAT, zoned=True)


def _iso_local(moment: datetime | None, settings: Settings) -> str:
    return "" if moment is None else moment.astimezone(settings.export_timezone).isoformat()
