"""What one run works with: the request, the clock, the arrival key, the run's one SMTP connection."""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property
from typing import TypeVar
from zoneinfo import ZoneInfo

from wa_export.clock import DatabaseClock, Window
from wa_export.export.results import Trigger
from wa_export.mail.errors import RUN_FATAL_STEPS, MailError
from wa_export.mail.message import OutgoingMail
from wa_export.mail.transport import MailSender
from wa_export.recipients import Recipients, option_recipients, recipients_for
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store.arrivals import ArrivalKey, Key
from wa_export.store.connection import Store, Workspace
from wa_export.store.state import CLOCK_TOLERANCE
from wa_export.workbook_password import workbook_password
from wa_export.workspace_settings import in_zone

PROGRESS_EVERY = 1_000  # rows between two progress reports
T = TypeVar("T")


def new_run_id() -> str:
    """Host, process and a random part: every export_logs entry this tool writes carries one (the original's never)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class ExportRequest:
    """What the operator asked for: a window or --email makes a manual run."""

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
    def counts_run_anomalies(self) -> bool:
        """One process per run counts what belongs to no workspace (worker 0 of --workers); a filtered run does not."""
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
        if start > self.key.at(self.clock.now() + CLOCK_TOLERANCE):
            return self.end_key, True
        return start, False

    def in_zone(self, zone: ZoneInfo) -> RunContext:
        """This run in one workspace's time zone (its settings' EXPORT_TIMEZONE, which every formatter reads)."""
        settings = in_zone(self.settings, zone)
        return self if settings is self.settings else dataclasses.replace(self, settings=settings)

    def recipients_for(self, workspace: Workspace) -> Recipients:
        if self.request.email_override:
            return option_recipients(self.request.email_override)
        return recipients_for(workspace, self.settings)

    def without_address(self, recipients: Recipients) -> bool:
        """A run that emails skips a workspace with no address at all (a refused one fails: `refusal`)."""
        return self.request.send_email and not recipients.addresses and not recipients.problem

    def workbook_password(self, workspace: Workspace) -> str | None:
        """The password its workbooks are encrypted with; None: not encrypted (`refusal` has turned away the rest)."""
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
        if self.on_messages is None:
            yield from rows
            return
        count = 0
        for count, row in enumerate(rows, 1):
            yield row
            if count % PROGRESS_EVERY == 0:
                self.on_messages(workspace_id, PROGRESS_EVERY)
        if count % PROGRESS_EVERY:
            self.on_messages(workspace_id, count % PROGRESS_EVERY)

    def redact(self, text: str) -> str:
        return redact(text, self.settings.secrets())
