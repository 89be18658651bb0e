"""Each command's result on screen: tables (rich on a terminal, plain lines under cron) and greppable log lines, or
one JSON document under --json (and what failed on stderr). No personal data (phone numbers, message text) in it.
Why this module is long: it holds every command's renderer, so that they share one way of showing things."""

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

from wa_export.clock import SECOND_FORMAT
from wa_export.errors import ExitCode
from wa_export.units import LOG_STAMP, count_noun, format_age, format_bytes, local_time, workspace_label

if TYPE_CHECKING:  # each command imports just the library it uses; settings imports pymongo
    from wa_export.commands import cleanup, config, deploy, health, logs, resend, state, stats, test_email
    from wa_export.demo.run import DemoResult
    from wa_export.export.results import RunResult, Trigger, WorkspaceResult
    from wa_export.export.workers import WorkersResult
    from wa_export.settings import Settings
    from wa_export.store.logs import LedgerEntry

OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")  # a workspace's or an entry's id
SENTENCE_PUNCTUATION = ".,;:!?()[]'\"`"  # around a word in a sentence, not part of the id, path or name
PLAIN_TABLE_WIDTH = 10_000  # tables printed when stdout is not a terminal are never wrapped: a row is one line
NOT_COUNTED = "–"  # the run skipped or refused the workspace before counting its messages
Row = TypeVar("Row")
Columns = list[tuple[Column, Callable[[Row], str]]]


def _json_default(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _rendered(table: Table, width: int) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, no_color=True, highlight=False, soft_wrap=True).print(table)
    return buffer.getvalue()


class Output:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        self.zone: tzinfo = UTC  # of log line stamps: EXPORT_TIMEZONE once the settings are read
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

    def json(self, document: Any) -> None:
        print(json.dumps(document, default=_json_default, ensure_ascii=False, indent=2), flush=True)

    def table(self, table: Table) -> None:
        """A rich table on a terminal where it fits and shows every id, path and variable name of its cells whole;
        else the title, the header and one unwrapped line per row."""
        if self.interactive:
            width = self.console.width
            rendered = _rendered(table, width)  # columns with a minimum width can make it wider than the terminal
            cells = (Text.from_markup(str(cell)).plain for column in table.columns for cell in column.cells)
            words = Counter(word for cell in cells for word in unbreakable_words(cell))
            if all(cell_len(line) <= width for line in rendered.splitlines()) and all(
                rendered.count(word) >= shown for word, shown in words.items()
            ):
                self.console.print(table)
                return
        if table.title:
            self.line(Text.from_markup(str(table.title)).plain)
        table.title = table.box = None
        table.show_edge = table.pad_edge = False
        for column in table.columns:
            column.no_wrap = True  # PLAIN_TABLE_WIDTH leaves room for every cell
        for row in _rendered(table, PLAIN_TABLE_WIDTH).splitlines():
            if row.strip():
                self.line(row.rstrip())

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


def display_path(path: str | os.PathLike[str] | None, export_dir: Path | None) -> str:
    """``path`` relative to EXPORT_DIR, as tables and log lines show it; in full when outside it (or no dir)."""
    if path and export_dir is not None and Path(path).is_relative_to(export_dir):
        return str(Path(path).relative_to(export_dir))
    return str(path or "")


def _fields(fields: Mapping[str, object], zone: Settings | tzinfo = UTC) -> str:
    """A greppable line's ``key=value`` pairs, times in ISO 8601 in ``zone``; a None value leaves its key out."""
    return " ".join(f"{key}={_logfmt(value, zone)}" for key, value in fields.items() if value is not None)


def _logfmt(value: object, zone: Settings | tzinfo) -> str:
    """Quoted when empty or holding a space, a quote, a backslash, an equals sign or a control character (a tenant's
    workspace name may hold escape sequences), so every pair stays one word and prints nothing raw."""
    text = local_time(value, zone, LOG_STAMP) if isinstance(value, datetime) else str(value)
    quote = not text or not text.isprintable() or re.search(r'[\s"=\\]', text)
    return json.dumps(text, ensure_ascii=False) if quote else text


class _Observer:
    """One log line per workspace as the run goes, greppable; on a terminal also two bars (workspaces done, messages
    exported)."""

    def __init__(self, output: Output, export_dir: Path | None, progress: Progress | None = None) -> None:
        self.output, self.export_dir, self.progress = output, export_dir, progress
        self.task: Any = None
        self.messages_task: Any = None

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        where = f", files in {self.export_dir}" if self.export_dir is not None else ""
        self.output.log("INFO", f"{trigger} export run started: {count_noun(total_workspaces, 'workspace')}{where}")
        if self.progress is not None:
            self.task = self.progress.add_task(f"{trigger} export", total=total_workspaces, of=f"/{total_workspaces:,}")

    def messages_exported(self, workspace_id: str, count: int) -> None:
        if self.progress is None:  # the log has one line per workspace
            return
        if self.messages_task is None:  # total=None: a pulsing bar and a running count
            self.messages_task = self.progress.add_task("messages", total=None, of="")
        self.progress.advance(self.messages_task, count)

    def workspace_finished(self, result: WorkspaceResult) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.advance(self.task)
        # "–": skipped or refused before its messages were counted ("0" would claim none)
        uncounted = result.message_count == 0 and result.outcome in ("skipped", "failed", "not_due")
        window = (result.window_start, result.window_end)
        fields = {
            "workspace": result.workspace_id,
            "name": result.workspace_name,
            "outcome": result.outcome,
            "messages": NOT_COUNTED if uncounted else result.message_count,
            "window": "/".join(local_time(end, self.output.zone, LOG_STAMP) for end in window) if all(window) else None,
            "file": display_path(result.file_path, self.export_dir) or None,
            "reason": result.reason or None,
        }
        self.output.log("ERROR" if result.outcome == "failed" else "INFO", _fields(fields))


@contextmanager
def export_observer(output: Output, export_dir: Path | None = None) -> Iterator[Any]:
    """The run's observer for this output (silent under --json); log lines show file paths relative to ``export_dir``."""
    if not output.interactive:
        yield _Observer(output, export_dir)
        return
    # ``3/10`` for the workspaces, ``12,345`` for the messages (their total is not known in advance).
    count = TextColumn("{task.completed:,.0f}{task.fields[of]}", style="progress.download")
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), count, TimeElapsedColumn())
    with Progress(*columns, console=output.console, transient=True) as progress:
        yield _Observer(output, export_dir, progress)


def render_workers(output: Output, merged: WorkersResult, settings: Settings, emails: bool = True) -> None:
    from wa_export.export.workers import WorkersResult

    # The children's output is captured: the lines a single run logs, the folder of their relative file paths first.
    workers, workspaces = count_noun(merged.count, "worker"), count_noun(len(merged.workspaces), "workspace")
    output.log("INFO", f"scheduled export run with {workers}: {workspaces}, files in {settings.export_dir}")
    plain = _Observer(output, settings.export_dir)
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
    summary = dry_run_summary(header, merged, emails) if dry_run else merged.summary()
    output.log("ERROR" if merged.exit_code else "INFO", summary)


def render_export(output: Output, result: RunResult, settings: Settings, emails: bool = True) -> None:
    for warning in result.warnings:  # one greppable line each, on a terminal and under cron alike
        output.log("WARNING", warning.message)
    header = f"{result.trigger} export run (dry run)"
    summary = dry_run_summary(header, result, emails) if result.dry_run else result.summary()
    output.log("ERROR" if result.failed else "INFO", f"{summary} (run {result.run_id})")
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


# What to try while `demo --serve` runs.
DEMO_COMMANDS = ("health", "stats", "logs", "state", "export --hours 1 --email you@example.com")


def render_demo(output: Output, result: DemoResult) -> None:
    output.line(result.run.summary())
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


def render_deploy(output: Output, result: deploy.DeployResult) -> None:
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


def render_cleanup(output: Output, result: cleanup.CleanupResult, settings: Settings) -> None:
    # The log is the audit trail: one line per file, on a terminal too.
    verb, removed = ("would delete", "would remove") if result.dry_run else ("deleted", "removed")
    for item in result.files:
        modified = local_time(item.modified_at, settings, LOG_STAMP)
        path = display_path(item.path, settings.export_dir)
        output.log("INFO", f"{verb} {item.kind} {path} size={item.size} modified={modified}")
    for folder in result.folders_removed:
        output.log("INFO", f"{removed} empty folder {display_path(folder, settings.export_dir)}")
    for error in result.errors:
        output.log("ERROR", error)
    output.log("ERROR" if result.exit_code else "INFO", result.summary())
    if result.event_error is not None:
        # stderr keeps --json stdout a single document; the event is part of the job (exit 3).
        output.stderr(
            f"the files were cleaned, but the cleanup event could not be recorded in system_logs: {result.event_error}"
        )


def render_config(output: Output, report: config.ConfigReport) -> None:
    """The tables, one `INVALID` line per problem and a sentence on stderr, for a CI log."""
    where = f".env file {report.env_file}" if report.env_file is not None else "no .env file"
    columns: Columns[config.SettingLine] = [
        (Column("Variable", overflow="fold"), lambda line: escape(line.variable)),
        (Column("Value", overflow="fold"), lambda line: escape(line.value or "(not set)")),
        (Column("Source", overflow="fold"), lambda line: escape(line.source)),
        (Column("Status", overflow="fold"), lambda line: "invalid" if line.problem else "ok"),
    ]
    for title, lines in (
        (f"wa-export settings (environment, {where})", report.settings),
        ("WORKSPACE_<ID>_EMAIL and _WORKBOOK_PASSWORD", report.workspace_addresses),
        ("WORKSPACE_<ID>_TIMEZONE and _SCHEDULE", report.workspace_settings),
    ):
        if lines:
            output.table(column_table(lines, columns, title=escape(title)))
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


def render_health(output: Output, report: health.HealthReport, settings: Settings) -> None:
    for check in report.checks:  # one greppable line per check
        output.log(f"{check.status:<7}", f"{check.name}: {check.reason}")
    for check in report.checks:  # unwrapped, so they can be copied into mongosh
        for command in check.details.get("commands", []):
            output.line(command)
    output.log("ERROR" if report.exit_code else "INFO", report.summary())


def render_test_email(output: Output, result: test_email.TestEmailResult, settings: Settings) -> None:
    to = ", ".join(result.recipients)
    if result.error is None:
        sent = f"test email sent to {to} via {result.server} ({result.security}) with {result.attachment} attached"
        output.log("INFO", sent)
    else:  # no address when the workspace's only one was refused: the reason names the variable
        output.stderr(f"test email{f' to {to}' if to else ''} failed at step {result.error.step}: {result.error}")


# `logs --system` names each event for what it is; event_type alone says "success" for a run.
EVENT_NAMES = {"cursor_move": "cursor moved"}  # else its kind with spaces: "export run", "health check"


def render_logs(output: Output, report: logs.LogsReport, settings: Settings) -> None:
    zone = settings.timezone_name
    if report.kind == "system":
        if not report.system_entries:
            output.line("No wa-export events in system_logs yet.")
            return

        def event(entry: logs.SystemLogEntry) -> str:
            name = EVENT_NAMES.get(entry.kind, entry.kind.replace("_", " ") or entry.event_type)
            return escape(f"{name} (failed)" if entry.event_type == "error" and entry.kind else name)

        system: Columns[logs.SystemLogEntry] = [
            (Column("Time", no_wrap=True), lambda entry: local_time(entry.time, settings, SECOND_FORMAT)),
            (Column("Event", no_wrap=True), event),
            (Column("Message", overflow="fold"), lambda entry: escape(entry.message)),
        ]
        title = f"wa-export events, newest first (times in {zone})"
        output.table(column_table(report.system_entries, system, title=title, box=box.SIMPLE_HEAD))
        return
    entries = report.export_entries
    if not entries:
        output.line("No export logs match." if report.status or report.workspace_id else "No export logs yet.")
        return

    def window(e: LedgerEntry) -> str:
        hours = [local_time(moment, settings, "%H:%M") for moment in (e.window_start, e.window_end)]
        return "–".join(hours) if e.window_start and e.window_end else ""

    columns: Columns[LedgerEntry] = [
        (Column("Time", no_wrap=True), lambda export: local_time(export.time, settings)),
        (Column("Id", no_wrap=True), lambda export: str(export.id)),  # whole, to paste into `wa-export resend`
        (Column("Workspace", overflow="fold", min_width=10), lambda e: escape(e.workspace_name or e.workspace_id)),
        (Column("Run", no_wrap=True), lambda e: e.trigger or ""),
        (Column("Window", no_wrap=True), window),
        (Column("Msgs", justify="right"), lambda export: str(export.message_count)),
        (
            Column("Status", no_wrap=True),
            lambda e: e.status + (" (possible duplicate)" if e.possible_duplicate else ""),
        ),
        (Column("File", no_wrap=True), lambda export: escape(display_path(export.file_path, settings.export_dir))),
        (Column("Recipients / error", overflow="fold"), lambda e: escape(e.error_message or e.email_sent_to)),
    ]
    title = f"Exports, newest first (times in {zone})"
    output.table(column_table(entries, columns, title=title, box=box.SIMPLE_HEAD, pad_edge=False))


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


STATS_MAX_ROWS = 31  # a longer period is shown in groups of several days: one screen
SPARK_MAX_WIDTH = 14


def _chunks(count: int, limit: int) -> list[tuple[int, int]]:
    """[start, end) ranges splitting ``count`` items into at most ``limit`` equal-sized groups."""
    size = max(1, -(-count // limit))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def render_stats(output: Output, report: stats.StatsReport, settings: Settings) -> None:
    period = report.period
    span = f"{period.days[0]:%Y-%m-%d} – {period.days[-1]:%Y-%m-%d} ({period.timezone_name})"
    (_render_workspace_stats if report.single else _render_stats_overview)(output, report, settings, span)


def _render_workspace_stats(output: Output, report: stats.StatsReport, settings: Settings, span: str) -> None:
    from wa_export.export.email_text import status_sentence
    from wa_export.export.rows import STATUSES
    from wa_export.recipients import describe_recipients

    figures = report.workspaces[0]
    # The Status values as the workbook's column and the email name them, then any other seen (unknown).
    statuses = list(STATUSES)
    statuses += [s for s in sorted({s for day in figures.per_day for s in day.counts}) if s not in statuses]
    rows = [figures.per_day[start:end] for start, end in _chunks(len(figures.per_day), STATS_MAX_ROWS)]
    per = "day" if len(rows[0]) == 1 else count_noun(len(rows[0]), "day")
    title = f"{workspace_label(figures.workspace.name, figures.workspace.id)}: messages per {per}, {span}"
    counts = [Column(name, justify="right") for name in (*statuses, "Total")]
    table = Table("Day" if per == "day" else "Days", *counts, "Trend", title=escape(title), box=box.SIMPLE_HEAD)
    totals = [sum(day.total for day in days) for days in rows]
    for days, total in zip(rows, totals, strict=True):
        label = f"{days[0].day:%a %Y-%m-%d}" if len(days) == 1 else f"{days[0].day:%Y-%m-%d} +{len(days) - 1}d"
        cells = [str(sum(day.counts.get(status, 0) for day in days)) for status in statuses]
        table.add_row(label, *cells, str(total), bar(total, max(totals)))
    table.add_section()
    table.add_row("Total", *(str(figures.totals.get(status, 0)) for status in statuses), str(figures.total), "")
    output.table(table)
    output.line(status_sentence(statuses))
    exports = figures.exports
    output.line(
        f"Exports in these days: {exports.completed} completed ({count_noun(exports.messages_exported, 'message')}), "
        f"{exports.failed} failed"
        + (f" (last failure {local_time(exports.last_failure, settings)})" if exports.last_failure else "")
        + f"; last success: {local_time(exports.last_success, settings) or 'never'}."
    )
    if figures.workspace.status != "active":
        output.line(f"Workspace status is {figures.workspace.status!r}: scheduled runs skip it.")
    output.line(describe_recipients(figures.recipients, figures.workspace.id, settings) + ".")
    zone, schedule = figures.time_zone, figures.schedule
    output.line(
        f"Time zone: {zone.value or 'invalid'} (from the {zone.where}); "
        f"schedule: {schedule.value or 'invalid'} (from the {schedule.where})"
        + "".join(f"; {problem.rstrip('.')}" for problem in (zone.problem, schedule.problem) if problem)
        + "."
    )
    if figures.password.problem is not None:
        output.line(f"Workbooks: not exported, {figures.password.problem}")
    elif figures.encrypted:
        output.line(f"Workbooks: password-protected (password from {figures.password.where}).")
    else:
        output.line("Workbooks: not password-protected.")


def _render_stats_overview(output: Output, report: stats.StatsReport, settings: Settings, span: str) -> None:
    from wa_export.recipients import address_label

    workspaces = report.workspaces
    if not workspaces:
        output.line(f"No active workspaces ({span}).")
        return
    chunks = _chunks(len(report.period.days), SPARK_MAX_WIDTH)

    def trend(row: stats.WorkspaceStats) -> str:
        return sparkline([sum(day.total for day in row.per_day[start:end]) for start, end in chunks])

    # Short headers: with a week's trend the table fits 80 columns.
    columns: Columns[stats.WorkspaceStats] = [
        (
            Column("Workspace / id", overflow="fold"),
            lambda row: escape(f"{row.workspace.name or '(unnamed)'} {row.workspace.id}"),
        ),
        (Column("Msgs", justify="right"), lambda row: str(row.total)),
        (Column("Trend", no_wrap=True), trend),
        (Column("Sent", justify="right"), lambda row: str(row.exports.completed)),
        (Column("Failed", justify="right"), lambda row: str(row.exports.failed)),
        (Column("Last sent", no_wrap=True), lambda row: local_time(row.exports.last_success, settings) or "never"),
        (Column("Addr"), lambda row: address_label(row.recipients)),
    ]
    output.table(
        column_table(workspaces, columns, title=f"Active workspaces, {span}", box=box.SIMPLE_HEAD, pad_edge=False)
    )
    missing = sum(1 for row in workspaces if not row.address_configured)
    refused = sum(1 for row in workspaces if row.recipients.problem)
    output.line(
        f"{count_noun(len(workspaces), 'active workspace')}, {count_noun(sum(s.total for s in workspaces), 'message')}, "
        f"{count_noun(sum(s.exports.completed for s in workspaces), 'export')}, "
        f"{sum(s.exports.failed for s in workspaces)} failed, {missing} without an address"
        + (f", {refused} with a refused address (bad)" if refused else "")
        + f", {sum(1 for s in workspaces if s.encrypted)} with password-protected workbooks"
        + ". Details: wa-export stats WORKSPACE_ID."
    )


def render_resend(output: Output, result: resend.ResendResult, settings: Settings) -> None:
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


def _part(entry: LedgerEntry) -> str:
    return f", part {entry.part} of {entry.parts}" if entry.parts and entry.parts > 1 else ""


def render_verify(output: Output, report: logs.VerifyReport, settings: Settings) -> None:
    from wa_export.store.arrivals import key_text

    file = f"{report.path} ({format_bytes(report.file.size)}, SHA-256 {report.file.sha256})"
    if not report.found:
        output.stderr(f"{file}: {report.as_dict()['error']}")
        return
    output.line(f"File: {file}")

    def when(moment: datetime | None) -> str:  # a sentence states no zone: each time names its own
        return local_time(moment, settings, SECOND_FORMAT, zoned=True) or "?"

    for entry in report.entries:
        recorded, between = entry.recorded_range, f"from {when(entry.window_start)} to {when(entry.window_end)}"
        if recorded is None:
            held = "no range recorded"
        elif recorded.kind == "arrival":
            held = f"arrived {between} (arrival keys {key_text(recorded.low)} to {key_text(recorded.high)})"
        else:
            held = f"timestamped {between}"
        resent = f", a resend of export {entry.resend_of}" if entry.resend_of is not None else ""
        output.line(f"Export {entry.id} ({entry.status}, {entry.trigger or 'original service'}{_part(entry)}{resent})")
        output.line(f"  Workspace: {workspace_label(entry.workspace_name, entry.workspace_id)}")
        output.line(f"  Sent: {when(entry.sent_at)} to {', '.join(entry.recipients) or '(nobody recorded)'}")
        output.line(f"  Messages: {entry.message_count}, {held}")
        output.line(f"  File name: {entry.file_name or '(not recorded)'}")


def render_state(output: Output, report: state.StateReport, settings: Settings) -> None:
    if not report.workspaces:
        output.line("No active workspaces.")
    for workspace in report.workspaces:  # one greppable line per workspace, on a terminal too
        output.log("INFO", "state " + _fields(_state_facts(workspace, settings), settings))
    if report.waiting_count_cap is not None and any(w.waiting and w.waiting.capped for w in report.workspaces):
        output.line(f"Counts stop at {report.waiting_count_cap}; wa-export state WORKSPACE_ID counts exactly.")


def _state_facts(workspace: state.WorkspaceReport, settings: Settings) -> dict[str, object]:
    """Every fact of the workspace's delivery, named as its plain line names them; None: not there."""
    from wa_export.store.arrivals import key_text

    cursor, held, waiting = workspace.has_cursor, workspace.lease_held, workspace.waiting
    age = workspace.oldest_waiting_age_seconds
    return {
        "workspace": workspace.workspace_id,
        "name": workspace.workspace_name,
        "cursor": (workspace.cursor_time or "") if cursor else "none",
        "cursor_key": key_text(workspace.cursor_key) if cursor else None,
        "cursor_source": (workspace.cursor_source or "unknown") if cursor else None,
        "cursor_ahead_of_database_clock": "true" if workspace.cursor_ahead_of_database_clock else None,
        "legacy_watermark": None if cursor else workspace.legacy_watermark,
        "note": None if cursor else _no_cursor_text(workspace, settings),
        "waiting": "unknown" if waiting is None else f"{waiting.count}{'+' if waiting.capped else ''}",
        "oldest_waiting": None if waiting is None or age is None else waiting.oldest_at,
        "oldest_waiting_age_seconds": None if age is None else int(age),
        "schedule": workspace.schedule or "invalid",
        "time_zone": workspace.time_zone or "invalid",
        "next_due": workspace.next_due_at,
        "lease": "held" if held else "free",
        "lease_owner": workspace.lease_owner if held else None,
        "lease_expires": workspace.lease_expires_at if held else None,
        "last_success": workspace.last_success_at or "never",
        "consecutive_failures": workspace.consecutive_failures,
        "last_error": workspace.last_error or None,
        "last_possible_duplicate": workspace.last_possible_duplicate_at,
        "in_flight": _in_flight_text(workspace.in_flight, settings) if workspace.in_flight else None,
        "setting_problem": workspace.setting_problem,
        "cursor_problem": workspace.cursor_problem,
    }


def _no_cursor_text(workspace: state.WorkspaceReport, settings: Settings) -> str:
    if workspace.legacy_watermark is not None:
        return "v1 watermark (legacy_watermark): the next scheduled run turns it into a cursor"
    starts = "no cursor yet: the next scheduled run starts"
    if moment := local_time(workspace.next_run_starts_at, settings, SECOND_FORMAT):
        return f"{starts} at {moment} (where the original service's last export ended)"
    if workspace.first_cursor is not None:
        return f"{starts} {settings.export_interval_minutes} min (EXPORT_INTERVAL_MINUTES) before its own end"
    return "no cursor yet"


def _in_flight_text(in_flight: Mapping[str, Any], settings: Settings) -> str:
    from wa_export.store.arrivals import time_of

    part, total, started = in_flight.get("part"), in_flight.get("parts"), in_flight.get("started_at")
    low, high = (local_time(time_of(in_flight.get(key)), settings, SECOND_FORMAT) for key in ("from_key", "to_key"))
    parts = [
        f"part {part} of {total}" if part is not None and total is not None else "",
        f"arrivals {low} to {high}" if low and high else "",
        f"run {in_flight['run_id']}" if in_flight.get("run_id") else "",
        f"since {local_time(started, settings, SECOND_FORMAT)}" if isinstance(started, datetime) else "",
    ]
    return ", ".join(part for part in parts if part) or "yes"


def render_move(output: Output, move: state.CursorMove, settings: Settings) -> None:
    arrived = f"message {move.past_message_id} (arrived {local_time(move.requested_time, settings, SECOND_FORMAT, zoned=True)})"
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
        age = after.oldest_waiting_age_seconds
        oldest = "" if age is None else f", the oldest arrived {format_age(timedelta(seconds=age))} ago"
        count = f"{after.waiting.count}{'+' if after.waiting.capped else ''}"
        output.line(f"Messages waiting from the new cursor: {count}{oldest}.")
    output.line(f"Recorded in system_logs (host {move.host}); see wa-export logs --system.")
