"""Each command's result on screen: a rich table on a terminal, greppable log lines under cron, or under --json one
document on stdout (and what failed on stderr). No personal data (phone numbers, message text) ever reaches it.

Why this module is long: one renderer per command, each with its own table and its own plain lines.
"""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from wa_export.clock import MINUTE_FORMAT, SECOND_FORMAT
from wa_export.errors import ExitCode
from wa_export.units import LOG_STAMP, count_noun, format_age, format_bytes, local_time, workspace_label

if TYPE_CHECKING:  # each command imports just the library it uses; settings imports pymongo
    from wa_export.commands.cleanup import CleanupFile, CleanupResult
    from wa_export.commands.config import ConfigReport, SettingLine
    from wa_export.commands.deploy import DeployResult
    from wa_export.commands.health import HealthReport
    from wa_export.commands.logs import LogsReport, SystemLogEntry, VerifyReport
    from wa_export.commands.resend import ResendResult
    from wa_export.commands.state import CursorMove, StateReport, WorkspaceReport
    from wa_export.commands.stats import StatsReport, WorkspaceStats
    from wa_export.commands.test_email import TestEmailResult
    from wa_export.demo.run import DemoResult
    from wa_export.export.results import RunResult, Trigger, WorkspaceResult
    from wa_export.export.workers import WorkersResult
    from wa_export.settings import Settings
    from wa_export.store.logs import LedgerEntry

OUTCOME_STYLE = {"completed": "green", "written": "green", "dry_run": "cyan", "skipped": "yellow", "failed": "bold red"}
OUTCOME_STYLE |= dict.fromkeys(("no_messages", "not_due"), "dim")
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")  # a workspace's or an entry's id
SENTENCE_PUNCTUATION = ".,;:!?()[]'\"`"  # around a word in a sentence, not part of the id, path or name
PLAIN_TABLE_WIDTH = 10_000  # tables printed when stdout is not a terminal are never wrapped: a row is one line
Row = TypeVar("Row")
Columns = list[tuple[Column, Callable[[Row], str]]]


def _json_default(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _render(table: Table, width: int, **options: Any) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, no_color=True, highlight=False, **options).print(table)
    return buffer.getvalue()


class Output:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        # The zone of log line stamps: EXPORT_TIMEZONE once the settings are read (the times in the lines use it too).
        self.zone: tzinfo = UTC
        self.console = Console(highlight=False, soft_wrap=True)
        self.interactive = sys.stdout.isatty() and not json_output

    def show(self, result: Any, render: Callable[..., None], *args: Any) -> int:
        """Under --json the result's document is stdout's only text; `render` still says on stderr what failed."""
        code = int(getattr(result, "exit_code", ExitCode.OK))
        if self.json_output:
            self.json({"ok": code == ExitCode.OK, **result.as_dict()})
        render(self, result, *args)
        return code

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text, markup=False)
        elif not self.json_output:
            print(text, flush=True)

    def log(self, level: str, text: str) -> None:
        self.line(f"{local_time(datetime.now(UTC), self.zone, LOG_STAMP)} {level} {text}")

    def summary(self, text: str, failed: object) -> None:
        self.log("ERROR" if failed else "INFO", text)

    def json(self, document: Any) -> None:
        print(json.dumps(document, default=_json_default, ensure_ascii=False, indent=2), flush=True)

    def table(self, table: Table, keep_whole: Iterable[str] = ()) -> None:
        """A rich table on a terminal, plain lines otherwise or when the ids and paths of ``keep_whole`` would break."""
        if self.interactive and self.fits(table, keep_whole):
            self.console.print(table)
            return
        # The title, then the header and one greppable line per row: no box, no wrapping.
        if table.title:
            self.line(Text.from_markup(table.title).plain if isinstance(table.title, str) else str(table.title))
        table.title = table.box = None
        table.show_edge = table.show_lines = table.pad_edge = False
        for column in table.columns:
            column.no_wrap = True  # PLAIN_TABLE_WIDTH leaves room for every cell
        for row in _render(table, PLAIN_TABLE_WIDTH).splitlines():
            if row.strip():
                self.line(row.rstrip())

    def fits(self, table: Table, keep_whole: Iterable[str]) -> bool:
        """It fits this terminal and shows each string of ``keep_whole`` whole, as often as it is listed."""
        width = self.console.width
        rendered = _render(table, width, soft_wrap=True)  # as self.console renders it: never cropped
        # Columns with a minimum width can make rich draw a table wider than the terminal.
        if any(cell_len(line) > width for line in rendered.splitlines()):
            return False
        return all(rendered.count(word) >= shown for word, shown in Counter(keep_whole).items() if word)

    def error(self, message: str, code: int) -> None:
        if self.json_output:
            self.json({"ok": False, "exit_code": code, "error": message})
        self.stderr(message)

    @staticmethod
    def stderr(message: str) -> None:
        print(f"wa-export: {message}", file=sys.stderr, flush=True)


def unbreakable_words(text: str | None) -> list[str]:
    """The words of a message a table must not split: ids, paths and variable names (``WORKSPACE_…_EMAIL``)."""
    words = (word.strip(SENTENCE_PUNCTUATION) for word in (text or "").split())
    return [word for word in words if "/" in word or "_" in word or OBJECT_ID.fullmatch(word)]


def column_table(rows: Iterable[Row], columns: Sequence[tuple[Column, Callable[[Row], str]]], **options: Any) -> Table:
    """A table from (column, cell of a row) pairs: a new column is one more pair; the columns can serve again."""
    table = Table(*(column.copy() for column, _ in columns), **options)
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def styled(text: str, style: str | None) -> str:
    """``text`` (already escaped) as rich markup in ``style``; unchanged when there is none."""
    return f"[{style}]{text}[/{style}]" if style else text


def outcome_cell(outcome: str) -> str:
    return styled(escape(outcome), OUTCOME_STYLE.get(outcome))


def workspace_cell(name: str | None, workspace_id: str, separator: str = "\n") -> str:
    """The workspace's name, then its id dimmed (under it by default)."""
    return f"{escape(name or '') or '(unnamed)'}{separator}[dim]{escape(workspace_id)}[/dim]"


def display_path(path: str | os.PathLike[str] | None, export_dir: Path | None) -> str:
    """``path`` relative to EXPORT_DIR, as tables and log lines show it; in full when outside it (or no dir)."""
    if path and export_dir is not None and Path(path).is_relative_to(export_dir):
        return str(Path(path).relative_to(export_dir))
    return str(path or "")


def short_time(moment: datetime | None, settings: Settings) -> str:
    """'11-25 22:08' this year (short enough for an 80-column table), '2025-11-25 22:08' before."""
    if moment is None:
        return ""
    this_year = moment.astimezone(settings.export_timezone).year == datetime.now(settings.export_timezone).year
    return local_time(moment, settings, "%m-%d %H:%M" if this_year else MINUTE_FORMAT)


NOT_COUNTED = "–"  # the run skipped or refused the workspace before counting its messages
CLEANUP_TABLE_ROWS = 15
WIDE_LOGS = 150  # below this terminal width the logs table leaves the file name to --json
HEALTH_STYLE = {"ok": "green", "warning": "yellow", "failed": "bold red", "skipped": "dim"}
ADDRESS_STYLE = {"no": "yellow", "bad": "bold red"}  # stats' Addr column: a missing or refused address
STATS_MAX_ROWS = 31  # longer periods are summed into buckets of several days: one screen
SPARK_MAX_WIDTH = 14


def _quoted(text: str | None) -> str:
    return json.dumps(text, ensure_ascii=False)


def _fields(fields: Mapping[str, object]) -> str:
    """``key=value`` pairs of a greppable log line; a None value leaves its key out."""
    return " ".join(f"{key}={value}" for key, value in fields.items() if value is not None)


class _PlainObserver:
    """Under cron: one log line per workspace, greppable, no escape codes."""

    def __init__(self, output: Output, export_dir: Path | None) -> None:
        self.output, self.export_dir = output, export_dir

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        where = f", files in {self.export_dir}" if self.export_dir is not None else ""
        self.output.log("INFO", f"{trigger} export run started: {count_noun(total_workspaces, 'workspace')}{where}")

    def messages_exported(self, workspace_id: str, count: int) -> None:
        return None  # one line per workspace is enough in a log

    def workspace_finished(self, result: WorkspaceResult) -> None:
        fields = {
            "workspace": result.workspace_id,
            "name": _quoted(result.workspace_name),
            "outcome": result.outcome,
            "messages": _message_count(result, "{:d}"),
            "file": display_path(result.file_path, self.export_dir) or None,
            "reason": _quoted(result.reason) if result.reason else None,
        }
        self.output.log("ERROR" if result.outcome == "failed" else "INFO", _fields(fields))


class _ProgressObserver:
    """Two lines on a terminal: workspaces done of all, and messages exported so far."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: Any = None
        self.messages_task: Any = None

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        self.task = self.progress.add_task(f"{trigger} export", total=total_workspaces, of=f"/{total_workspaces:,}")

    def messages_exported(self, workspace_id: str, count: int) -> None:
        if self.messages_task is None:  # total=None: a pulsing bar and a running count
            self.messages_task = self.progress.add_task("messages", total=None, of="")
        self.progress.advance(self.messages_task, count)

    def workspace_finished(self, result: WorkspaceResult) -> None:
        if self.task is not None:
            self.progress.advance(self.task)


@contextmanager
def export_observer(output: Output, export_dir: Path | None = None) -> Iterator[Any]:
    """The run's observer for this output (silent under --json); log lines show file paths relative to ``export_dir``."""
    if not output.interactive:
        yield _PlainObserver(output, export_dir)
        return
    # ``3/10`` for the workspaces, ``12,345`` for the messages (their total is not known in advance).
    count = TextColumn("{task.completed:,.0f}{task.fields[of]}", style="progress.download")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), count, TimeElapsedColumn())
    with Progress(*columns, console=output.console, transient=True) as progress:
        yield _ProgressObserver(progress)


def render_workers(output: Output, merged: WorkersResult, settings: Settings, emails: bool = True) -> None:
    from wa_export.export.workers import WorkersResult

    # The children's output is captured: each workspace is shown here, as a single-process run shows it.
    if output.interactive:
        _render_export_table(output, merged.workspaces, settings)
    else:  # the lines a single run logs: the folder its relative file paths are in, then one per workspace
        workers, workspaces = count_noun(merged.count, "worker"), count_noun(len(merged.workspaces), "workspace")
        output.log("INFO", f"scheduled export run with {workers}: {workspaces}, files in {settings.export_dir}")
        plain = _PlainObserver(output, settings.export_dir)
        for result in merged.workspaces:
            plain.workspace_finished(result)
    dry_run = any(worker.document.get("dry_run") for worker in merged.workers)
    for worker, run in zip(merged.workers, merged.as_dict()["runs"], strict=True):
        summary = run["summary"]
        if dry_run and summary:  # the child's JSON summary counts what it did (nothing): say what it would do
            child = WorkersResult(1, 0, 0, [worker], interrupted=bool(worker.document.get("interrupted")))
            summary = dry_run_summary("scheduled export run (dry run)", child, emails)
        output.line(f"worker {run['slot']}: exit {run['exit_code']}: {summary or run['error']}")
    for warning in merged.warnings:
        output.log("WARNING", warning.message)
    header = f"scheduled export run with {count_noun(merged.count, 'worker')} (dry run)"
    output.summary(dry_run_summary(header, merged, emails) if dry_run else merged.summary(), merged.exit_code)


def render_export(output: Output, result: RunResult, settings: Settings, emails: bool = True) -> None:
    if output.interactive:
        _render_export_table(output, result.workspaces, settings)
    for warning in result.warnings:  # one greppable line each, on a terminal and under cron alike
        output.log("WARNING", warning.message)
    header = f"{result.trigger} export run (dry run)"
    summary = dry_run_summary(header, result, emails) if result.dry_run else result.summary()
    output.summary(f"{summary} (run {result.run_id})", result.failed)
    for failed in result.workspaces:  # on stderr (with --json too), already redacted
        if failed.traceback:
            output.stderr(
                f"internal error in workspace {failed.workspace_id} ({failed.workspace_name}), "
                f"please report it with this traceback:\n{failed.traceback.rstrip()}"
            )


def dry_run_summary(header: str, run: RunResult | WorkersResult, emails: bool) -> str:
    """What the real run would send (none under --no-email); a failed workspace's messages wait, a skipped one's
    were never counted."""
    workspaces, anomalies = run.workspaces, run.anomaly_totals()
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
        f"would write the workbooks of {count_noun(written_only, 'workspace')} without emailing"
        if written_only
        else "",
        f"{count_noun(sum(workspace.message_count for workspace in would), 'message')} to send",
        f"{outcomes['no_messages']} without new messages",
        f"{outcomes['not_due']} not due" if outcomes["not_due"] else "",
        f"{outcomes['skipped']} skipped (messages not counted)" if outcomes["skipped"] else "0 skipped",
        f"{outcomes['failed']} failed" + (f" ({count_noun(not_sent, 'message')} not to be sent)" if not_sent else ""),
        *run.problems,
        "data issues: " + ", ".join(f"{n} {name}" for name, n in sorted(anomalies.items())) if anomalies else "",
        "interrupted before finishing" if run.interrupted else "",
    ]
    return ", ".join(part for part in parts if part) + "; nothing was written or sent"


def _message_count(result: WorkspaceResult, number_format: str) -> str:
    """Its messages, or NOT_COUNTED for a workspace skipped or refused before counting ("0" would claim none)."""
    uncounted = result.message_count == 0 and result.outcome in ("skipped", "failed", "not_due")
    return NOT_COUNTED if uncounted else number_format.format(result.message_count)


def _render_export_table(output: Output, results: Sequence[WorkspaceResult], settings: Settings) -> None:
    export_dir = settings.export_dir

    def detail(result: WorkspaceResult) -> str:
        return " ".join(part for part in (display_path(result.file_path, export_dir), result.reason or "") if part)

    def window(result: WorkspaceResult) -> str:
        if not (result.window_start and result.window_end):
            return ""
        return f"{local_time(result.window_start, settings)} → {local_time(result.window_end, settings, '%H:%M')}"

    # As wide as the longest id, so an id (on its own line under the name) fits whole when anything can.
    id_width = max((len(result.workspace_id) for result in results), default=10)
    columns: Columns[WorkspaceResult] = [
        (
            Column("Workspace", overflow="fold", min_width=id_width),
            lambda r: workspace_cell(r.workspace_name, r.workspace_id),
        ),
        (Column("Outcome", no_wrap=True), lambda result: outcome_cell(result.outcome)),
        (Column("Messages", justify="right", no_wrap=True), lambda result: _message_count(result, "{:,}")),
        (Column(f"Window ({settings.timezone_name})", overflow="fold"), window),  # the table's one zone, named once
        (Column("File / reason", overflow="fold"), lambda result: escape(detail(result))),
    ]
    # What must show unbroken: ids, file paths, and path- or variable-like words of reasons.
    ids = [result.workspace_id for result in results]
    keep_whole = ids + [
        word for r in results for word in [display_path(r.file_path, export_dir), *unbreakable_words(r.reason)]
    ]
    with_files = column_table(results, columns, title="wa-export")
    if output.fits(with_files, keep_whole):
        output.table(with_files)
        if any(result.file_path for result in results):
            output.line(f"Files are in {export_dir}.")
        return
    # Too narrow for the paths: the table without them, then one unwrapped line per file or reason.
    output.table(column_table(results, columns[:4], title="wa-export"), ids)
    if any(detail(result) for result in results):
        output.line(f"Files (in {export_dir}) and reasons:")
    for result in results:
        if detail(result):
            output.line(f"  {workspace_label(result.workspace_name, result.workspace_id)}: {detail(result)}")


# What to try while `demo --serve` runs.
DEMO_COMMANDS = ("health", "stats", "logs", "state", "export --hours 1 --email you@example.com")


def render_demo(output: Output, result: DemoResult) -> None:
    run = result.run
    if output.interactive:
        paths = [display_path(workspace.file_path, result.exports_dir) for workspace in run.workspaces]
        columns: Columns[tuple[WorkspaceResult, str]] = [
            (Column("Workspace", overflow="fold"), lambda row: escape(row[0].workspace_name)),
            (Column("Outcome", no_wrap=True), lambda row: outcome_cell(row[0].outcome)),
            (Column("Messages", justify="right", no_wrap=True), lambda row: f"{row[0].message_count:,}"),
            (
                Column("Workbook (in the exports folder)", overflow="fold"),
                lambda row: escape(row[1] or row[0].reason or ""),
            ),
        ]
        rows = zip(run.workspaces, paths, strict=True)
        output.table(column_table(rows, columns, title="wa-export demo"), keep_whole=paths)
    output.line(run.summary())
    for heading, files, folder in (
        (f"Workbooks ({len(result.workbooks)}) in", result.workbooks, result.exports_dir),
        (f"Emails ({len(result.emails)}) as .eml files in", result.emails, result.mail_dir),
    ):
        output.line(f"{heading} {folder}:")
        for file in files:
            output.line(f"  {display_path(file, folder)}")
    if result.env_file is None:
        output.line(
            "Both local servers are stopped. Next: `wa-export demo --serve` (`./dev demo --serve` in a clone) keeps "
            "them running to try every other command on this data."
        )
        return
    # The servers' settings (the password masked: it is in the 0600 file) and the commands to try.
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


def render_cleanup(output: Output, result: CleanupResult, settings: Settings) -> None:
    if not output.interactive:  # under cron the log is the audit trail: one line per file
        verb, removed = ("would delete", "would remove") if result.dry_run else ("deleted", "removed")
        for item in result.files:
            output.log("INFO", f"{verb} {item.kind} {display_path(item.path, settings.export_dir)} size={item.size}")
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
    folders: dict[str, list[CleanupFile]] = {}
    for item in result.files:
        folders.setdefault(item.folder, []).append(item)
    shown = sorted(folders)[:CLEANUP_TABLE_ROWS]

    def times(folder: str) -> list[datetime]:
        return [item.modified_at for item in folders[folder]]

    columns: Columns[str] = [
        (Column("Folder", overflow="fold"), lambda folder: escape(display_path(folder, settings.export_dir))),
        (Column("Files", justify="right", no_wrap=True), lambda folder: str(len(folders[folder]))),
        (Column("Size", justify="right", no_wrap=True), lambda f: format_bytes(sum(item.size for item in folders[f]))),
        (Column("Oldest", no_wrap=True), lambda folder: short_time(min(times(folder)), settings)),
        (Column("Newest", no_wrap=True), lambda folder: short_time(max(times(folder)), settings)),
        (Column("Removed", no_wrap=True), lambda folder: "yes" if folder in result.folders_removed else ""),
    ]
    title = f"wa-export cleanup{' (dry run)' if result.dry_run else ''}, file times in {settings.timezone_name}"
    table = column_table(shown, columns, title=title, box=box.SIMPLE_HEAD)
    if len(folders) > len(shown):
        table.add_row(f"… and {count_noun(len(folders) - len(shown), 'more folder')} (--json lists every file)")
    output.table(table, keep_whole=[display_path(folder, settings.export_dir) for folder in shown])


def render_config(output: Output, report: ConfigReport) -> None:
    """The tables, one `INVALID` line per problem and a sentence on stderr, for a CI log."""
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
    if count := len(report.problems):
        output.stderr(
            f"{count} setting{'s are' if count != 1 else ' is'} invalid ({report.problem_variables}); "
            f"fix {'them' if count != 1 else 'it'} before enabling the timer."
        )


def _settings_table(title: str, lines: list[SettingLine]) -> Table:
    table = Table(
        *(Column(name, overflow="fold") for name in ("Variable", "Value", "Source", "Status")), title=escape(title)
    )
    for line in lines:
        status = "[bold red]invalid[/bold red]" if line.problem else "[green]ok[/green]"
        table.add_row(escape(line.variable), escape(line.value or "(not set)"), escape(line.source), status)
    return table


def render_health(output: Output, report: HealthReport, settings: Settings) -> None:
    if not output.interactive:
        for check in report.checks:  # under cron: one greppable line per check
            output.log(f"{check.status:<7}", f"{check.name}: {check.reason}")
        output.summary(report.summary(), report.exit_code)
        return
    table = Table(*(Column(name, overflow="fold") for name in ("Check", "Status", "Reason")), title="wa-export health")
    for check in report.checks:
        table.add_row(check.name, styled(check.status, HEALTH_STYLE.get(check.status)), escape(check.reason))
    output.table(table)
    for check in report.checks:  # unwrapped, so they can be copied into mongosh
        for command in check.details.get("commands", []):
            output.line(command)
    output.line(report.summary())


def render_test_email(output: Output, result: TestEmailResult, settings: Settings) -> None:
    to = ", ".join(result.recipients)
    if result.error is None:
        sent = f"test email sent to {to} via {result.server} ({result.security}) with {result.attachment} attached"
        output.log("INFO", sent)
    else:  # no address when the workspace's only one was refused: the reason names the variable
        output.stderr(f"test email{f' to {to}' if to else ''} failed at step {result.error.step}: {result.error}")


# `logs --system` names each event for what it is; event_type alone says "success" for a run.
EVENT_NAMES = {"export_run": "export run", "cleanup": "cleanup", "cursor_move": "cursor moved"}
EVENT_NAMES["health_check"] = "health check"


def _event_cell(entry: SystemLogEntry) -> str:
    name = EVENT_NAMES.get(entry.kind, entry.kind or entry.event_type)
    failed = entry.event_type == "error"
    return styled(escape(f"{name} (failed)" if failed and entry.kind else name), "bold red" if failed else None)


def render_logs(output: Output, report: LogsReport, settings: Settings) -> None:
    zone = settings.timezone_name
    if report.kind == "system":
        if not report.system_entries:
            output.line("No wa-export events in system_logs yet.")
            return
        system: Columns[SystemLogEntry] = [
            (Column("Time", no_wrap=True), lambda entry: local_time(entry.time, settings, SECOND_FORMAT)),
            (Column("Event", no_wrap=True), _event_cell),
            (Column("Message", overflow="fold"), lambda entry: escape(entry.message)),
        ]
        title = f"wa-export events, newest first (times in {zone})"
        table = column_table(report.system_entries, system, title=title, box=box.SIMPLE_HEAD)
        output.table(table, [word for entry in report.system_entries for word in unbreakable_words(entry.message)])
        return
    entries = report.export_entries
    if not entries:
        output.line("No export logs match." if report.status or report.workspace_id else "No export logs yet.")
        return

    def window(e: LedgerEntry) -> str:
        hours = [local_time(moment, settings, "%H:%M") for moment in (e.window_start, e.window_end)]
        return "–".join(hours) if e.window_start and e.window_end else ""

    def status(e: LedgerEntry) -> str:
        return outcome_cell(e.status) + (" [yellow](possible duplicate)[/yellow]" if e.possible_duplicate else "")

    def file(export: LedgerEntry) -> str:
        return display_path(export.file_path, settings.export_dir)

    columns: Columns[LedgerEntry] = [
        (Column("Time", no_wrap=True), lambda export: short_time(export.time, settings)),
        (Column("Id", no_wrap=True), lambda export: str(export.id)),  # whole, to paste into `wa-export resend`
        (Column("Workspace", overflow="fold", min_width=10), lambda e: escape(e.workspace_name or e.workspace_id)),
        (Column("Run", no_wrap=True), lambda e: {"scheduled": "sched"}.get(e.trigger or "", e.trigger or "")),
        (Column("Window", no_wrap=True), window),
        (Column("Msgs", justify="right"), lambda export: str(export.message_count)),
        (Column("Status", no_wrap=True), status),
        (Column("File", no_wrap=True), lambda export: escape(file(export))),
        (
            Column("Recipients / error", overflow="fold", min_width=20),
            lambda e: f"[red]{escape(e.error_message)}[/red]" if e.error_message else escape(e.email_sent_to),
        ),
    ]
    # Plain output (cron, pipes) is never wrapped: it always has room for the file name.
    with_file = not output.interactive or output.console.width >= WIDE_LOGS
    if not with_file:
        del columns[7]
    # Entry ids, workspace ids shown instead of a name, file paths, and the ids and variable names of an error.
    keep_whole: list[str] = []
    for export in entries:
        keep_whole += [str(export.id), *([] if export.workspace_name else [export.workspace_id])]
        keep_whole += [
            *unbreakable_words(export.error_message or export.email_sent_to),
            *([file(export)] if with_file else []),
        ]
    title = f"Exports, newest first (times in {zone})"
    output.table(column_table(entries, columns, title=title, box=box.SIMPLE_HEAD, pad_edge=False), keep_whole)
    if not with_file:
        output.line("File paths and full times: wa-export logs --json.")


def bar(value: int, maximum: int, width: int = 24) -> str:
    """A horizontal bar scaled to `maximum`, in eighths of a character so small days still show."""
    if maximum <= 0 or value <= 0:
        return ""
    full, rest = divmod(max(1, round(value / maximum * width * 8)), 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[rest] if rest else "")


def sparkline(values: Sequence[int]) -> str:
    """One character per value, scaled to the largest; zero stays a visible ▁."""
    top = max(values, default=0)
    return "".join("▁▂▃▄▅▆▇█"[max(1, round(value / top * 7)) if value > 0 else 0] for value in values)


def _chunks(count: int, limit: int) -> list[tuple[int, int]]:
    """[start, end) index ranges splitting `count` items into at most `limit` equal-sized groups."""
    size = max(1, -(-count // limit))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def render_stats(output: Output, report: StatsReport, settings: Settings) -> None:
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
    chunks = _chunks(len(stats.per_day), STATS_MAX_ROWS)
    size = chunks[0][1] - chunks[0][0]
    per = "day" if size == 1 else count_noun(size, "day")
    title = f"{workspace_label(stats.workspace.name, stats.workspace.id)}: messages per {per}, {span}"
    columns = [Column("Day" if per == "day" else "Days", no_wrap=True)]
    columns += [Column(name, justify="right") for name in (*statuses, "Total")] + [Column("Trend", no_wrap=True)]
    table = Table(*columns, title=escape(title), box=box.SIMPLE_HEAD)
    rows = [stats.per_day[start:end] for start, end in chunks]
    totals = [sum(day.total for day in days) for days in rows]
    for days, total in zip(rows, totals, strict=True):
        label = f"{days[0].day:%a %Y-%m-%d}" if len(days) == 1 else f"{days[0].day:%Y-%m-%d} +{len(days) - 1}d"
        counts = [str(sum(day.counts.get(status, 0) for day in days)) for status in statuses]
        table.add_row(label, *counts, str(total), styled(bar(total, max(totals)), "cyan"))
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
    if stats.password.problem is not None:
        output.line(f"Workbooks: not exported, {stats.password.problem}")
    elif stats.encrypted:
        output.line(f"Workbooks: password-protected (password from {stats.password.where}).")
    else:
        output.line("Workbooks: not password-protected.")


def _render_stats_overview(output: Output, report: StatsReport, settings: Settings, span: str) -> None:
    from wa_export.recipients import address_label

    workspaces = report.workspaces
    if not workspaces:
        output.line(f"No active workspaces ({span}).")
        return
    chunks = _chunks(len(report.period.days), SPARK_MAX_WIDTH)
    separator = "\n" if output.interactive else " "  # plain output: one line per workspace

    def trend(stats: WorkspaceStats) -> str:
        return sparkline([sum(day.total for day in stats.per_day[start:end]) for start, end in chunks])

    def address(stats: WorkspaceStats) -> str:
        label = address_label(stats.recipients)
        return styled(label, ADDRESS_STYLE.get(label))

    # Short headers: with a week's trend the table fits 80 columns.
    columns: Columns[WorkspaceStats] = [
        (
            Column("Workspace / id", overflow="fold", min_width=24),
            lambda stats: workspace_cell(stats.workspace.name, stats.workspace.id, separator),
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


def render_resend(output: Output, result: ResendResult, settings: Settings) -> None:
    original = result.original
    what = (
        f"export {original.id} of {result.workspace_name or original.workspace_id} "
        f"({local_time(original.export_time, settings, zoned=True)}{_part(original)})"
    )
    to = ", ".join(result.recipients)
    if result.error is not None:
        output.stderr(f"re-sending {what} to {to} failed: {result.error}")
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
        output.stderr(f"{file}: {report.as_dict()['error']}")
        return
    output.line(f"File: {file}")
    for entry in report.entries:
        output.line(_ledger_entry_lines(entry, settings))


def _part(entry: LedgerEntry) -> str:
    return f", part {entry.part} of {entry.parts}" if entry.parts and entry.parts > 1 else ""


def _ledger_entry_lines(entry: LedgerEntry, settings: Settings) -> str:
    from wa_export.store.arrivals import key_text

    recorded = entry.recorded_range
    between = f"from {_time(entry.window_start, settings, '?')} to {_time(entry.window_end, settings, '?')}"
    if recorded is None:
        held = "no range recorded"
    elif recorded.kind == "arrival":
        held = f"arrived {between} (arrival keys {key_text(recorded.low)} to {key_text(recorded.high)})"
    else:
        held = f"timestamped {between}"
    resent = f", a resend of export {entry.resend_of}" if entry.resend_of is not None else ""
    lines = [
        f"Export {entry.id} ({entry.status}, {entry.trigger or 'original service'}{_part(entry)}{resent})",
        f"  Workspace: {workspace_label(entry.workspace_name, entry.workspace_id)}",
        f"  Sent: {_time(entry.sent_at, settings, '?')} to {', '.join(entry.recipients) or '(nobody recorded)'}",
        f"  Messages: {entry.message_count}, {held}",
        f"  File name: {entry.file_name or '(not recorded)'}",
    ]
    return "\n".join(lines)


def _time(moment: datetime | None, settings: Settings, zoned_or: str | None = None) -> str:
    """To the second; with ``zoned_or`` (a sentence states no zone) its zone's name, or ``zoned_or`` for no time."""
    return local_time(moment, settings, SECOND_FORMAT, zoned=zoned_or is not None) or zoned_or or ""


def render_state(output: Output, report: StateReport, settings: Settings) -> None:
    if not report.workspaces:
        output.line("No active workspaces.")
    elif output.interactive:
        output.table(_state_table(report, settings))
        if report.waiting_count_cap is not None and any(w.waiting and w.waiting.capped for w in report.workspaces):
            output.line(f"Counts stop at {report.waiting_count_cap}; wa-export state WORKSPACE_ID counts exactly.")
    else:
        for workspace in report.workspaces:  # under cron, a pipe: one greppable line per workspace
            output.log("INFO", "state " + _plain_fields(workspace, settings))


def render_move(output: Output, move: CursorMove, settings: Settings) -> None:
    arrived = f"message {move.past_message_id} (arrived {_time(move.requested_time, settings, '')})"
    if move.direction == "already_past":
        output.line(
            f"Workspace {move.workspace_id}: {arrived} is already behind the delivery position {move.new_position(settings)}: "
            "it was delivered or skipped before; nothing was moved."
        )
        return
    if move.past_message_id is not None:
        consequence = f"{arrived} will not be delivered; what arrived after it, in the same second too, will"
    else:
        consequence = {
            "back": "the next scheduled run delivers again what arrived from then on",
            "forward": "what arrived before then will not be delivered",
            "unchanged": "the cursor was already there",
            "created": "the next scheduled run starts there",
        }[move.direction]
    output.line(f"Workspace {move.workspace_id}: cursor {move.change(settings)}: {consequence}.")
    after = move.state_after
    if after is not None and after.waiting is not None:
        oldest = f", the oldest arrived {age} ago" if (age := _oldest_age(after)) else ""
        output.line(f"Messages waiting from the new cursor: {_waiting_count(after)}{oldest}.")
    output.line(f"Recorded in system_logs (host {move.host}); see wa-export logs --system.")


def _state_table(report: StateReport, settings: Settings) -> Table:
    title = f"Delivery state, times in {report.timezone_name} (database clock {_time(report.database_now, settings)})"

    def cursor(w: WorkspaceReport) -> str:
        if w.has_cursor:
            text = f"{short_time(w.cursor_time, settings)}\n[dim]{escape(w.cursor_source or 'unknown source')}[/dim]"
            return styled(text, "bold red" if w.cursor_ahead_of_database_clock else None)
        if w.legacy_watermark is not None:
            return f"{short_time(w.legacy_watermark, settings)}\n[dim]v1 watermark[/dim]"
        return "[yellow]none[/yellow]"

    def waiting(w: WorkspaceReport) -> str:
        age = _oldest_age(w)
        return _waiting_count(w) + (f"\n[dim]{age}[/dim]" if age else "")

    def schedule(w: WorkspaceReport) -> str:  # its schedule (and zone, when its own), then when a run delivers it
        if w.setting_problem:
            return "[red]invalid[/red]"
        zone = f" {w.time_zone}" if w.time_zone != report.timezone_name else ""
        when = "due" if w.due else f"next {short_time(w.next_due_at, settings)}"
        return f"{escape(w.schedule + zone)}\n[dim]{'manual only' if w.schedule == 'off' else when}[/dim]"

    def lease(w: WorkspaceReport) -> str:
        if not w.lease_held:
            return "free"
        return f"[yellow]held[/yellow]\n[dim]to {local_time(w.lease_expires_at, settings, '%H:%M')}[/dim]"

    columns: Columns[WorkspaceReport] = [
        (
            Column("Workspace / id", overflow="fold", min_width=24),
            lambda w: workspace_cell(w.workspace_name, w.workspace_id),
        ),
        (Column("Cursor", no_wrap=True), cursor),
        (Column("Waiting\n(oldest)", justify="right", no_wrap=True), waiting),
        (Column("Schedule", no_wrap=True), schedule),
        (Column("Lease", no_wrap=True), lease),
        (Column("Last success", no_wrap=True), lambda w: short_time(w.last_success_at, settings) or "never"),
        (Column("Fails", justify="right", no_wrap=True), lambda w: _count_cell(w.consecutive_failures)),
        (Column("Notes", overflow="fold", min_width=16), lambda w: escape("; ".join(_notes(w, settings)))),
    ]
    return column_table(report.workspaces, columns, title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)


def _count_cell(failures: int) -> str:
    return styled(str(failures), "bold red" if failures else None)


def _notes(workspace: WorkspaceReport, settings: Settings) -> list[str]:
    in_flight, starts_at = workspace.in_flight, workspace.next_run_starts_at
    notes = [
        "cursor ahead of the database clock" if workspace.cursor_ahead_of_database_clock else "",
        "becomes a cursor on the next run" if workspace.legacy_watermark is not None else "",
    ]
    if workspace.legacy_watermark is None and not workspace.has_cursor and workspace.first_cursor is not None:
        notes.append(
            f"next run starts {short_time(starts_at, settings)} (original service)"
            if starts_at is not None
            else f"next run starts {settings.export_interval_minutes} min before its end"
        )
    if in_flight:
        part, parts, started = in_flight.get("part"), in_flight.get("parts"), in_flight.get("started_at")
        notes.append(
            "in flight"
            + (f" part {part}/{parts}" if part is not None and parts is not None else "")
            + (f" since {short_time(started, settings)}" if isinstance(started, datetime) else "")
        )
    if workspace.last_possible_duplicate_at is not None:
        notes.append(f"possible duplicate {short_time(workspace.last_possible_duplicate_at, settings)}")
    notes += [workspace.last_error or "" if workspace.consecutive_failures else "", workspace.setting_problem or ""]
    notes.append(workspace.cursor_problem or "")
    return [note for note in notes if note]


def _no_cursor_text(workspace: WorkspaceReport, settings: Settings) -> str:
    if workspace.legacy_watermark is not None:
        return (
            f"v1 watermark {_time(workspace.legacy_watermark, settings)}: the next scheduled run turns it into a cursor"
        )
    if workspace.next_run_starts_at is not None:
        return (
            f"no cursor yet: the next scheduled run starts at {_time(workspace.next_run_starts_at, settings)} "
            "(where the original service's last export ended)"
        )
    if workspace.first_cursor is not None:
        return (
            "no cursor yet: the next scheduled run starts "
            f"{settings.export_interval_minutes} min (EXPORT_INTERVAL_MINUTES) before its own end"
        )
    return "no cursor yet"


def _plain_fields(workspace: WorkspaceReport, settings: Settings) -> str:
    from wa_export.store.arrivals import key_text

    def iso(moment: datetime | None) -> str | None:
        return None if moment is None else moment.astimezone(settings.export_timezone).isoformat()

    cursor, held, waiting = workspace.has_cursor, workspace.lease_held, workspace.waiting
    oldest = waiting if workspace.oldest_waiting_age_seconds is not None else None
    fields = {
        "workspace": workspace.workspace_id,
        "name": _quoted(workspace.workspace_name),
        "cursor": iso(workspace.cursor_time) or "" if cursor else "none",
        "cursor_key": key_text(workspace.cursor_key) if cursor else None,
        "cursor_source": workspace.cursor_source or "unknown" if cursor else None,
        "cursor_ahead_of_database_clock": "true" if cursor and workspace.cursor_ahead_of_database_clock else None,
        "legacy_watermark": None if cursor else iso(workspace.legacy_watermark),
        "note": None if cursor else _quoted(_no_cursor_text(workspace, settings)),
        "waiting": _waiting_count(workspace) if waiting else "unknown",
        "schedule": workspace.schedule or "invalid",
        "time_zone": workspace.time_zone or "invalid",
        "next_due": iso(workspace.next_due_at),
        "oldest_waiting": None if oldest is None else iso(oldest.oldest_at) or "",
        "oldest_waiting_age_seconds": None if oldest is None else int(workspace.oldest_waiting_age_seconds or 0),
        "lease": f"held lease_owner={workspace.lease_owner}" if held else "free",
        "lease_expires": iso(workspace.lease_expires_at) or "" if held else None,
        "last_success": iso(workspace.last_success_at) or "never",
        "consecutive_failures": workspace.consecutive_failures,
        "last_error": _quoted(workspace.last_error) if workspace.last_error else None,
        "last_possible_duplicate": iso(workspace.last_possible_duplicate_at),
        "in_flight": _quoted(_in_flight_text(workspace.in_flight, settings)) if workspace.in_flight else None,
        "cursor_problem": _quoted(workspace.cursor_problem) if workspace.cursor_problem else None,
    }
    return _fields(fields)


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

    part, total, started = in_flight.get("part"), in_flight.get("parts"), in_flight.get("started_at")
    low, high = time_of(in_flight.get("from_key")), time_of(in_flight.get("to_key"))
    parts = [
        f"part {part} of {total}" if part is not None and total is not None else "",
        f"arrivals {_time(low, settings)} to {_time(high, settings)}" if low is not None and high is not None else "",
        f"run {in_flight['run_id']}" if in_flight.get("run_id") else "",
        f"since {_time(started, settings)}" if isinstance(started, datetime) else "",
    ]
    return ", ".join(part for part in parts if part) or "yes"
