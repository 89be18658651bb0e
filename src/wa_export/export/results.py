"""What a run returns: per-workspace results, the run's result and its one-line summary.

Shared by single runs (export/run.py) and `--workers` runs (export/workers.py);
the CLI renders them, the library never prints.
"""

from __future__ import annotations

import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from wa_export.clock import iso
from wa_export.errors import ExitCode
from wa_export.export.preflight import RunWarning

Trigger = Literal["scheduled", "manual"]
Outcome = Literal["completed", "no_messages", "skipped", "failed", "written", "dry_run"]


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
    file_path: str | None = None  # the last workbook written (the only one unless the window had parts)
    recipients: tuple[str, ...] = ()
    recipients_source: str = "none"  # recipients.RecipientSource
    files: list[str] = field(default_factory=list)
    parts: int = 0  # emails the window needed (1 unless it was too big for one)
    emails_sent: int = 0
    possible_duplicate: bool = False  # some of it may repeat an earlier email (said in that email)
    cursor_source: str | None = None  # where a cursor created by this run came from
    traceback: str | None = None  # an unexpected error's traceback (redacted): the CLI prints it to stderr

    def unexpected_error(self, error: Exception, redact: Callable[[str], str]) -> str:
        """Keep the traceback of an error nobody anticipated (a bug, to be reported); return the one-line reason."""
        self.traceback = redact("".join(traceback.format_exception(error)))
        return redact(f"internal error ({type(error).__name__}: {error})")

    def add_counts(self, by_status: dict[str, int], anomalies: dict[str, int]) -> None:
        """Add one workbook's counts to the workspace's."""
        self.message_count += sum(by_status.values())
        for status, count in by_status.items():
            self.by_status[status] = self.by_status.get(status, 0) + count
        for name, count in anomalies.items():
            self.anomalies[name] = self.anomalies.get(name, 0) + count

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace_id": self.workspace_id,
            "workspace_name": self.workspace_name,
            "outcome": self.outcome,
            "reason": self.reason,
            "window_start": iso(self.window_start),
            "window_end": iso(self.window_end),
            "message_count": self.message_count,
            "by_status": self.by_status,
            "anomalies": self.anomalies,
            "file_path": self.file_path,
            "files": self.files,
            "parts": self.parts,
            "emails_sent": self.emails_sent,
            "possible_duplicate": self.possible_duplicate,
            "cursor_source": self.cursor_source,
            "recipients": list(self.recipients),
            "recipients_source": self.recipients_source,
            "traceback": self.traceback,
        }


@dataclass
class RunResult:
    run_id: str
    trigger: Trigger
    dry_run: bool
    started_at: datetime
    finished_at: datetime | None = None
    workspaces: list[WorkspaceResult] = field(default_factory=list)
    # Counted by the run, not by a workspace: messages of no chat (orphaned_message),
    # of a chat of no single workspace (ambiguous_chat), cursors ahead of the database clock.
    run_anomalies: dict[str, int] = field(default_factory=dict)
    warnings: list[RunWarning] = field(default_factory=list)  # see export/preflight.py
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
        return merged_anomalies([result.anomalies for result in self.workspaces], [self.run_anomalies])

    def summary(self) -> str:
        return summary_line(
            f"{self.trigger} export run{' (dry run)' if self.dry_run else ''}: {len(self.workspaces)} workspaces",
            self.count,
            self.message_count,
            self.anomaly_totals(),
            self.interrupted,
            [*self.problems, *cursor_notes([result.as_dict() for result in self.workspaces])],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "trigger": self.trigger,
            "dry_run": self.dry_run,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "interrupted": self.interrupted,
            "exit_code": self.exit_code,
            "message_count": self.message_count,
            "orphaned_messages": self.orphaned_messages,
            "run_anomalies": self.run_anomalies,
            "anomalies": self.anomaly_totals(),
            "problems": self.problems,
            "summary": self.summary(),
            "workspaces": [result.as_dict() for result in self.workspaces],
            "warnings": [warning.as_dict() for warning in self.warnings],
        }


def merged_anomalies(per_workspace: Sequence[dict[str, int]], per_run: Sequence[dict[str, int]]) -> dict[str, int]:
    """Workspace counts add up; run-level counts (one counting process per run) are taken once."""
    totals: Counter[str] = Counter()
    for anomalies in per_workspace:
        totals.update({name: int(count) for name, count in anomalies.items()})
    run_level: dict[str, int] = {}
    for anomalies in per_run:
        for name, count in anomalies.items():
            run_level[name] = max(run_level.get(name, 0), int(count))
    totals.update(run_level)
    return {name: count for name, count in totals.items() if count}


def cursor_notes(workspaces: Sequence[dict[str, Any]]) -> list[str]:
    """Summary notes on new cursors and possible duplicates, from workspace results (as dicts)."""
    notes = []
    sources = Counter(ws["cursor_source"] for ws in workspaces if ws.get("cursor_source"))
    if sources:
        notes.append("new cursors: " + ", ".join(f"{count} from {source}" for source, count in sorted(sources.items())))
    duplicates = sum(1 for ws in workspaces if ws.get("possible_duplicate"))
    if duplicates:
        notes.append(f"{duplicates} re-delivered as a possible duplicate (said in the email)")
    return notes


def summary_line(
    header: str,
    count: Callable[[Any], int],
    message_count: int,
    anomalies: dict[str, int],
    interrupted: bool,
    problems: Sequence[str] = (),
) -> str:
    """The one-line run summary shared by single runs and `--workers` runs."""
    parts = [
        header,
        f"{count('completed')} emailed",
        f"{count('written')} written",
        f"{count('no_messages')} without new messages",
        f"{count('skipped')} skipped",
        f"{count('failed')} failed",
        f"{message_count} messages",
        *problems,
    ]
    if anomalies:
        parts.append("data issues: " + ", ".join(f"{number} {name}" for name, number in sorted(anomalies.items())))
    if interrupted:
        parts.append("interrupted before finishing")
    return ", ".join(parts)


class RunObserver(Protocol):
    """What the run reports while it works (the CLI draws progress from it).

    ``messages_exported(workspace_id, count)`` is optional for an observer: the
    run calls it, when the observer has it, as rows are written (``count`` = the
    messages of that workspace written since the previous call, not a total).
    """

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None: ...

    def workspace_finished(self, result: WorkspaceResult) -> None: ...


class SilentObserver:
    """Reports nothing: for --json runs and library callers."""

    def run_started(self, total_workspaces: int, trigger: Trigger) -> None:
        return None

    def messages_exported(self, workspace_id: str, count: int) -> None:
        return None

    def workspace_finished(self, result: WorkspaceResult) -> None:
        return None


__all__ = [
    "Outcome",
    "RunObserver",
    "RunResult",
    "SilentObserver",
    "Trigger",
    "WorkspaceResult",
    "cursor_notes",
    "merged_anomalies",
    "summary_line",
]
