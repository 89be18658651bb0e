"""From an export run to its metrics file: the facts `metrics.write_metrics_file` writes.

Run facts come from the run's result (or, when the run could not start or
MongoDB was unreachable, from its exit code and duration alone). Per-workspace
facts come from two reads after the run, whatever the number of workspaces:
the active workspaces and all export_state documents. Messages waiting are
counted (as `wa-export state` counts them, capped at WAITING_COUNT_CAP) only
for workspaces that did not get up to date: a consecutive failure, an
in-flight delivery or a failed outcome in this run. A workspace this scheduled
run delivered up to its end (or found without new messages) has 0 waiting, at
no cost. For any other one (skipped, not reached, a manual run) the run cannot
tell without a query per idle workspace, so the waiting series is left out.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from wa_export.clock import as_utc_or_none
from wa_export.commands.state import WAITING_COUNT_CAP
from wa_export.errors import ConfigError, ExitCode, MongoUnavailable
from wa_export.metrics import RunMetrics, WorkspaceMetrics, write_metrics_file
from wa_export.settings import Settings, metrics_file_path
from wa_export.store.arrivals import ForeignCursor
from wa_export.store.connection import Store, open_store
from wa_export.store.state import read_state_documents
from wa_export.store.waiting import count_waiting, position_key
from wa_export.units import count_or_zero

if TYPE_CHECKING:  # results are only read here; `export` imports this module
    from wa_export.export.run import ExportRequest, RunResult
    from wa_export.export.workers import WorkersResult

UP_TO_DATE_OUTCOMES = frozenset({"completed", "no_messages"})  # of a scheduled run that moves cursors
DELIVERED_OUTCOMES = frozenset({"completed", "written"})


@dataclass
class RunFacts:
    """What one `wa-export export` invocation did, however it ended."""

    trigger: str
    exit_code: int
    duration_seconds: float
    outcomes: dict[str, str] = field(default_factory=dict)  # workspace id -> outcome
    messages_exported: int = 0
    moves_cursors: bool = False  # a scheduled run that sends (not --no-email): its outcomes say "up to date"

    @classmethod
    def from_workspaces(
        cls, trigger: str, exit_code: int, duration: float, workspaces: list[tuple[str, str, int]], moves_cursors: bool
    ) -> RunFacts:
        """From (workspace id, outcome, message count) of every workspace the run handled."""
        return cls(
            trigger=trigger,
            exit_code=exit_code,
            duration_seconds=duration,
            outcomes={workspace_id: outcome for workspace_id, outcome, _ in workspaces},
            messages_exported=sum(count for _, outcome, count in workspaces if outcome in DELIVERED_OUTCOMES),
            moves_cursors=moves_cursors,
        )


def facts_of_run(result: RunResult, request: ExportRequest) -> RunFacts:
    return RunFacts.from_workspaces(
        result.trigger,
        result.exit_code,
        0.0,
        [(item.workspace_id, item.outcome, item.message_count) for item in result.workspaces],
        request.moves_cursors,
    )


def facts_of_workers(merged: WorkersResult, request: ExportRequest) -> RunFacts:
    return RunFacts.from_workspaces(
        "scheduled",
        merged.exit_code,
        0.0,
        [
            (str(item.get("workspace_id")), str(item.get("outcome")), count_or_zero(item.get("message_count")))
            for item in merged.workspaces
        ],
        request.moves_cursors,
    )


def collect_metrics(settings: Settings | None, facts: RunFacts, store: Store | None = None) -> RunMetrics:
    """The metrics of a finished run; per-workspace facts only when MongoDB answered during the run."""
    workspaces: tuple[WorkspaceMetrics, ...] = ()
    ran = facts.exit_code in (ExitCode.OK, ExitCode.FAILED)  # 2: never started; 3: MongoDB gone
    if settings is not None and ran:
        try:
            if store is not None:
                workspaces = workspace_metrics(store, facts)
            else:
                with open_store(settings) as own:
                    workspaces = workspace_metrics(own, facts)
        except (MongoUnavailable, PyMongoError):
            workspaces = ()  # MongoDB went away after the run: the run facts still go out
    return RunMetrics(
        trigger=facts.trigger,
        finished_at=datetime.now(UTC),  # Prometheus compares it with its own clock: wall time
        duration_seconds=facts.duration_seconds,
        exit_code=int(facts.exit_code),
        messages_exported=facts.messages_exported,
        workspaces_by_outcome=dict(Counter(facts.outcomes.values())),
        workspaces=workspaces,
    )


def workspace_metrics(store: Store, facts: RunFacts) -> tuple[WorkspaceMetrics, ...]:
    workspaces = store.active_workspaces()
    documents = read_state_documents(store, [workspace.id for workspace in workspaces])
    now = store.database_now()
    found = []
    for workspace in workspaces:
        document: Mapping[str, Any] = documents.get(workspace.id, {})
        failures = count_or_zero(document.get("consecutive_failures"))
        outcome = facts.outcomes.get(workspace.id)
        waiting: int | None = None
        age: float | None = None
        if failures or document.get("in_flight") or outcome == "failed":
            try:
                start = position_key(store.settings, document, now)
            except ForeignCursor:
                start = None  # the run refused it and said why; how many wait is unknown
            if start is not None:
                counted = count_waiting(store, workspace, start, WAITING_COUNT_CAP)
                waiting = counted.count
                age = (now - counted.oldest_at).total_seconds() if counted.oldest_at is not None else 0.0
        elif facts.moves_cursors and outcome in UP_TO_DATE_OUTCOMES:
            waiting, age = 0, 0.0
        found.append(
            WorkspaceMetrics(
                workspace_id=workspace.id,
                last_success_at=as_utc_or_none(document.get("last_success_at")),
                consecutive_failures=failures,
                waiting_messages=waiting,
                oldest_waiting_age_seconds=max(0.0, age) if age is not None else None,
            )
        )
    return tuple(found)


class RunRecorder:
    """Writes the metrics file once an `export` invocation ends, whatever ended it.

    The CLI creates it before anything can fail, tells it what it learns
    (settings, the run's facts) and calls `finish(exit_code)` at the very end.
    A metrics file that cannot be written never changes the run's exit code:
    `finish` returns one warning sentence instead.
    """

    def __init__(self, explicit_path: Path | None, *, trigger: str, enabled: bool = True) -> None:
        self.explicit_path = explicit_path
        self.trigger = trigger
        self.enabled = enabled  # off for --dry-run and for --workers children (the parent writes)
        self.started = time.monotonic()
        self.settings: Settings | None = None
        self.facts: RunFacts | None = None

    def use(self, settings: Settings) -> None:
        """The run's settings; raises ConfigError (exit 2) for an unusable --metrics-file."""
        self.settings = settings
        self.path()

    def ran(self, result: RunResult, request: ExportRequest) -> None:
        self.facts = facts_of_run(result, request)

    def ran_workers(self, merged: WorkersResult, request: ExportRequest) -> None:
        self.facts = facts_of_workers(merged, request)

    def path(self) -> Path | None:
        """--metrics-file (validated: exit 2 when unusable) or EXPORT_METRICS_FILE."""
        if self.explicit_path is not None:
            return metrics_file_path(str(self.explicit_path), "--metrics-file")
        return self.settings.export_metrics_file if self.settings is not None else None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def finish(self, exit_code: int) -> str | None:
        if not self.enabled:
            return None
        try:
            path = self.path()
        except ConfigError:
            return None  # already reported as the command's own error (exit 2)
        if path is None:
            return None
        facts = self.facts
        if facts is None:
            # The run never produced a result (bad settings, MongoDB unreachable, an
            # interruption): what is known is how it ended and how long it took.
            facts = RunFacts(self.trigger, exit_code, self.elapsed())
        else:
            facts.exit_code, facts.duration_seconds = exit_code, self.elapsed()
        try:
            write_metrics_file(path, collect_metrics(self.settings, facts))
        except OSError as error:
            return (
                f"WARNING: could not write the metrics file {path} ({error.strerror or error}); "
                "the run's exit code is unchanged: make its folder writable for this user."
            )
        return None
