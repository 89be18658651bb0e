"""What one run works with (the request, the clock, the arrival key, its one SMTP connection) and what it reports
(single and `--workers` runs alike): results, one-line summary, WARNING lines (`health` too)."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, Literal, Protocol, TypeVar
from zoneinfo import ZoneInfo

from wa_export.clock import DatabaseClock, Window, iso
from wa_export.errors import ExitCode
from wa_export.mail.errors import RUN_FATAL_STEPS, MailError
from wa_export.mail.message import OutgoingMail
from wa_export.mail.transport import MailSender
from wa_export.recipients import UNSENT_WITHOUT_ADDRESS, Recipients, missing_hint, option_recipients, recipients_for
from wa_export.redaction import redact
from wa_export.settings import Settings, malformed_variables_sentence, unmatched_variables_sentence
from wa_export.store.arrivals import ArrivalKey, Key
from wa_export.store.connection import Store, Workspace
from wa_export.store.state import CLOCK_TOLERANCE
from wa_export.units import count_noun
from wa_export.workbook_password import workbook_password
from wa_export.workspace_settings import in_zone

TIME_FIELDS = ("window_start", "window_end", "next_due")
NO_ADDRESS = "no email address configured"  # a skip reason's start: the run warns about these skips only
Trigger = Literal["scheduled", "manual"]
Outcome = Literal["completed", "no_messages", "skipped", "failed", "written", "dry_run", "not_due"]
# The summary's count of each outcome, in its order (not_due only when there is one).
OUTCOME_WORDS: tuple[tuple[Outcome, str], ...] = (
    ("completed", "emailed"),
    ("written", "written"),
    ("no_messages", "without new messages"),
    ("not_due", "not due"),
    ("skipped", "skipped"),
    ("failed", "failed"),
)
WarningKind = Literal[
    "no_active_workspace", "missing_address", "unmatched_address", "malformed_address_variable", "duplicate_workspace"
]


@dataclass
class WorkspaceResult:
    workspace_id: str
    workspace_name: str
    outcome: Outcome
    reason: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    message_count: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    anomalies: dict[str, int] = field(default_factory=dict)
    file_path: str | None = None  # the last workbook written
    files: list[str] = field(default_factory=list)
    parts: int = 0  # emails the window needed
    emails_sent: int = 0
    possible_duplicate: bool = False  # some of it may repeat an earlier email (said in that email)
    cursor_source: str | None = None  # where a cursor created by this run came from
    recipients: tuple[str, ...] = ()
    recipients_source: str = "none"  # recipients.RecipientSource
    traceback: str | None = None  # an unexpected error's (redacted): the CLI prints it to stderr
    next_due: datetime | None = None  # not_due: the first slot of its schedule that delivers it (None: off)

    @classmethod
    def of(
        cls, workspace: Workspace, outcome: Outcome, recipients: Recipients | None = None, **details: Any
    ) -> WorkspaceResult:
        if recipients is not None:
            details.update(recipients=recipients.addresses, recipients_source=recipients.source)
        return cls(workspace.id, workspace.name, outcome, **details)

    def add_counts(self, by_status: dict[str, int], anomalies: dict[str, int]) -> None:
        self.message_count += sum(by_status.values())
        for totals, counts in ((self.by_status, by_status), (self.anomalies, anomalies)):
            for name, count in counts.items():
                totals[name] = totals.get(name, 0) + count

    def as_dict(self) -> dict[str, Any]:
        times = {name: iso(getattr(self, name)) for name in TIME_FIELDS}
        return dataclasses.asdict(self) | times | {"recipients": list(self.recipients)}

    @classmethod
    def from_dict(cls, document: Mapping[str, Any]) -> WorkspaceResult:
        """`as_dict` read back (a `--workers` child's JSON)."""
        fields = {name: document[name] for name in cls.__dataclass_fields__ if name in document}
        times = {name: datetime.fromisoformat(fields[name]) for name in TIME_FIELDS if fields.get(name)}
        return cls(**fields | times | {"recipients": tuple(fields.get("recipients") or ())})


@dataclass
class RunResult:
    run_id: str
    trigger: Trigger
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    workspaces: list[WorkspaceResult] = field(default_factory=list)
    # Counted by the run, not a workspace: messages of no chat or of no single workspace's chat.
    run_anomalies: dict[str, int] = field(default_factory=dict)
    warnings: list[RunWarning] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one sentence each, e.g. an unusable arrival key
    interrupted: bool = False

    def count(self, outcome: Outcome) -> int:
        return sum(1 for result in self.workspaces if result.outcome == outcome)

    @property
    def failed(self) -> bool:
        return self.interrupted or self.count("failed") > 0

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.FAILED if self.failed else ExitCode.OK

    @property
    def message_count(self) -> int:
        return sum(result.message_count for result in self.workspaces)

    @property
    def orphaned_messages(self) -> int:
        return self.run_anomalies.get("orphaned_message", 0)

    def anomaly_totals(self) -> dict[str, int]:
        return dict(sum((Counter(result.anomalies) for result in self.workspaces), +Counter(self.run_anomalies)))

    def summary(self, header: str | None = None, problems: Sequence[str] = ()) -> str:  # the one-line run summary
        workspaces, anomalies, words = self.workspaces, self.anomaly_totals(), OUTCOME_WORDS
        count = Counter(ws.outcome for ws in workspaces)
        sources = sorted(Counter(ws.cursor_source for ws in workspaces if ws.cursor_source).items())
        duplicates = sum(1 for ws in workspaces if ws.possible_duplicate)
        header = header or f"{self.trigger} export run{' (dry run)' if self.dry_run else ''}"
        parts = [
            f"{header}: {count_noun(len(workspaces), 'workspace')}",
            *(f"{count[outcome]} {word}" for outcome, word in words if outcome != "not_due" or count[outcome]),
            count_noun(self.message_count, "message"),
            *problems,
            *self.problems,
            "new cursors: " + ", ".join(f"{n} from {source}" for source, n in sources) if sources else "",
            f"{duplicates} re-delivered as a possible duplicate (said in the email)" if duplicates else "",
            "data issues: " + ", ".join(f"{n} {name}" for name, n in sorted(anomalies.items())) if anomalies else "",
            "interrupted before finishing" if self.interrupted else "",
        ]
        return ", ".join(part for part in parts if part)

    def as_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self) | {"started_at": iso(self.started_at), "finished_at": iso(self.finished_at)}
        document |= {name: getattr(self, name) for name in ("exit_code", "message_count", "orphaned_messages")}
        workspaces = [result.as_dict() for result in self.workspaces]
        return document | {"anomalies": self.anomaly_totals(), "summary": self.summary(), "workspaces": workspaces}


class RunObserver(Protocol):
    """What the run reports while it works; optional: `messages_exported(workspace_id, count since last call)`."""

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        return None

    def workspace_finished(self, result: WorkspaceResult) -> None:
        return None


class SilentObserver(RunObserver):  # for --json runs and library callers
    def messages_exported(self, workspace_id: str, count: int) -> None:
        return None


@dataclass(frozen=True)
class RunWarning:
    kind: WarningKind
    message: str
    workspace_id: str | None = None
    variable: str | None = None


def unmatched_variable_warnings(settings: Settings, active_ids: Iterable[str]) -> list[RunWarning]:
    """Malformed WORKSPACE_<ID>_<SUFFIX> variables, and those no active workspace uses (typos, deleted tenants)."""
    active, database = {workspace_id.lower() for workspace_id in active_ids}, settings.mongodb_database
    return malformed_variable_warnings(settings) + [
        RunWarning("unmatched_address", unmatched_variables_sentence([name], database), workspace_id, name)
        for workspace_id, suffix in settings.configured_workspace_variables()
        if workspace_id not in active
        for name in [f"WORKSPACE_{workspace_id}_{suffix}"]
    ]


def malformed_variable_warnings(settings: Settings) -> list[RunWarning]:
    return [
        RunWarning("malformed_address_variable", malformed_variables_sentence([name]), variable=name)
        for name in settings.malformed_workspace_variables
    ]


def run_warnings(
    settings: Settings,
    workspaces: Sequence[WorkspaceResult],
    *,
    covers_all_active: bool,
    email_override: bool = False,
) -> list[RunWarning]:
    """The warnings of a run over its workspaces' results (a failed one already has its error line); with
    `covers_all_active` they are every active workspace, so a variable matching none matches no active one."""
    warnings = [
        RunWarning(
            "missing_address",
            f"workspace {ws.workspace_id} ({ws.workspace_name or 'unnamed'}) has no email address "
            f"and is not exported: {missing_hint(ws.workspace_id, settings)}; {UNSENT_WITHOUT_ADDRESS}",
            ws.workspace_id,
            f"WORKSPACE_{ws.workspace_id}_EMAIL",
        )
        for ws in workspaces
        if not email_override and ws.outcome == "skipped" and (ws.reason or "").startswith(NO_ADDRESS)
    ]
    if not covers_all_active:
        return warnings + malformed_variable_warnings(settings)
    if not workspaces:
        no_active = f"database {settings.mongodb_database!r} has no active workspace, so nothing is exported: "
        warnings.append(
            RunWarning("no_active_workspace", no_active + "check MONGODB_DATABASE and the workspaces' status")
        )
    return warnings + unmatched_variable_warnings(settings, (ws.workspace_id for ws in workspaces))


PROGRESS_EVERY = 1_000  # rows between two progress reports
T = TypeVar("T")


def new_run_id() -> str:  # every export_logs entry this tool writes carries one (the original service's never)
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ExportRequest:  # what the operator asked for: a window or --email makes a manual run
    workspace_ids: tuple[str, ...] = ()
    window: Window | None = None
    email_override: tuple[str, ...] = ()
    send_email: bool = True
    dry_run: bool = False
    worker_slot: tuple[int, int] | None = None  # `--workers N`: this process exports share k of N

    @property
    def is_manual(self) -> bool:
        return self.window is not None or bool(self.email_override)

    @property
    def trigger(self) -> Trigger:
        return "manual" if self.is_manual else "scheduled"

    @property
    def moves_cursors(self) -> bool:
        return not self.is_manual and self.send_email and not self.dry_run

    @property
    def counts_run_anomalies(self) -> bool:  # what belongs to no workspace: worker 0 of --workers, never a filtered run
        return not self.workspace_ids and (self.worker_slot is None or self.worker_slot[0] == 0)


@dataclass
class MailSession:
    """The run's one SMTP connection (opened on the first email) and the failure that dooms the rest."""

    settings: Settings
    fatal_error: str | None = None
    _sender: MailSender | None = None

    def send(self, mail: OutgoingMail) -> None:
        if self._sender is None:
            self._sender = MailSender(self.settings).__enter__()
        try:
            self._sender.send(mail)
        except MailError as error:
            if error.step in RUN_FATAL_STEPS:
                # It fails every later email the same way: remembered instead of hammering the server (and lockouts).
                self.fatal_error = redact(str(error), self.settings.secrets())
            raise

    def close(self) -> None:
        if self._sender is not None:
            self._sender.__exit__(None, None, None)
            self._sender = None


@dataclass
class RunContext:
    settings: Settings
    store: Store
    request: ExportRequest
    run_id: str
    clock: DatabaseClock
    key: ArrivalKey
    mail: MailSession
    stop_requested: threading.Event = field(default_factory=threading.Event)
    contested_slugs: frozenset[str] = frozenset()  # nobody adopts their unmarked folder (workbook/naming.py)
    on_messages: Callable[[str, int], None] | None = None  # the observer's optional messages_exported

    @property
    def run_time(self) -> datetime:  # the database's time at the start: file names, subjects, export_timestamp
        return self.clock.started_at

    @cached_property
    def end_time(self) -> datetime:  # where every scheduled window ends: minus EXPORT_LAG_SECONDS
        return self.run_time - timedelta(seconds=self.settings.export_lag_seconds)

    @cached_property
    def end_key(self) -> Key:
        return self.key.at(self.end_time)

    def start_at(self, workspace_id: str, cursor: object) -> tuple[Key, bool]:
        """Where this run starts the workspace from its cursor, and whether that was ahead of the clock (a later run
        moved it to its end: this run starts at its end key). Another EXPORT_ARRIVAL_FIELD's raises ForeignCursor."""
        start = self.key.position(workspace_id, cursor)
        ahead = start > self.key.at(self.clock.now() + CLOCK_TOLERANCE)
        return (self.end_key, True) if ahead else (start, False)

    def in_zone(self, zone: ZoneInfo) -> RunContext:  # every formatter reads the settings' EXPORT_TIMEZONE
        settings = in_zone(self.settings, zone)
        return self if settings is self.settings else dataclasses.replace(self, settings=settings)

    def recipients_for(self, workspace: Workspace) -> Recipients:
        if self.request.email_override:
            return option_recipients(self.request.email_override)
        return recipients_for(workspace, self.settings)

    def without_address(self, recipients: Recipients) -> bool:
        """A run that emails skips a workspace with no address at all (a refused one fails: `refusal`)."""
        return self.request.send_email and not recipients.addresses and not recipients.problem

    def workbook_password(self, workspace: Workspace) -> str | None:  # None: not encrypted (`refusal` checked it)
        return workbook_password(workspace, self.settings).value

    def refusal(self, recipients: Recipients, workspace: Workspace) -> str | None:
        """Why this run fails the workspace before exporting it (--dry-run decides by it too), or None."""
        password_problem = workbook_password(workspace, self.settings).problem
        if password_problem is not None:
            return password_problem  # no workbook at all, not even a kept one: its personal data stays in MongoDB
        if not self.request.send_email:
            return None
        if recipients.problem is not None:
            return recipients.problem  # a malformed or disallowed address: this workspace only
        if self.mail.fatal_error is not None:
            return f"not attempted: an earlier email of this run failed the same way ({self.mail.fatal_error})"
        return None

    def with_progress(self, workspace_id: str, rows: Iterator[T]) -> Iterator[T]:
        """`rows` unchanged, reporting every PROGRESS_EVERY rows (and the rest at the end) to `on_messages`."""
        report, count = self.on_messages or (lambda workspace_id, count: None), 0
        for count, row in enumerate(rows, 1):
            yield row
            if count % PROGRESS_EVERY == 0:
                report(workspace_id, PROGRESS_EVERY)
        if count % PROGRESS_EVERY:
            report(workspace_id, count % PROGRESS_EVERY)

    def redact(self, text: str) -> str:
        return redact(text, self.settings.secrets())
