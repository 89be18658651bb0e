"""The Prometheus textfile every `export` run writes: its trigger's run facts (the other's kept), workspace facts."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pymongo.errors import PyMongoError

from wa_export.clock import as_utc_or_none
from wa_export.commands.state import WAITING_COUNT_CAP
from wa_export.errors import ConfigError, ExitCode, MongoUnavailable
from wa_export.settings import Settings, metrics_file_path
from wa_export.store.arrivals import ForeignCursor
from wa_export.store.connection import Store, open_store
from wa_export.store.ownership import count_waiting
from wa_export.store.state import position_key, read_state_documents
from wa_export.units import count_or_zero
from wa_export.workbook.publish import replace_file

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from wa_export.export.results import ExportRequest, RunResult
    from wa_export.export.workers import WorkersResult

_HELP = {
    "wa_export_last_run_timestamp_seconds": "Unix time (this host's clock) the last export run of this trigger ended.",
    "wa_export_last_run_duration_seconds": "Wall time of the last export run of this trigger, in seconds.",
    "wa_export_last_run_exit_code": "Exit code of the last export run of this trigger (0 ok, 1 some work failed, 2 usage/config, 3 MongoDB unreachable).",
    "wa_export_last_run_messages_exported": "Messages the last export run of this trigger delivered (or wrote, with --no-email).",
    "wa_export_last_run_workspaces": "Workspaces per outcome in the last export run of this trigger.",
    "wa_export_workspace_last_success_timestamp_seconds": "Unix time (database clock) of the workspace's last successful scheduled delivery.",
    "wa_export_workspace_consecutive_failures": "Consecutive failed scheduled deliveries of the workspace.",
    "wa_export_workspace_waiting_messages": "Messages that arrived at or after the workspace's cursor and are not delivered yet.",
    "wa_export_workspace_oldest_waiting_age_seconds": "Seconds since the oldest undelivered message of the workspace arrived (0: none waiting).",
}
_LABELS = {name: ["workspace_id"] if "_workspace_" in name else ["trigger"] for name in _HELP}
_LABELS["wa_export_last_run_workspaces"] = ["trigger", "outcome"]


@dataclass(frozen=True)
class WorkspaceMetrics:
    workspace_id: str
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    waiting_messages: int | None = None  # None: this run cannot tell
    oldest_waiting_age_seconds: float | None = None


@dataclass(frozen=True)
class RunMetrics:  # what one `wa-export export` invocation did, however it ended; `collect_metrics` adds the rest
    trigger: str  # "scheduled" or "manual"
    exit_code: int
    duration_seconds: float
    outcomes: Mapping[str, str] = field(default_factory=dict)  # workspace id -> outcome
    messages_exported: int = 0
    moves_cursors: bool = False  # a scheduled run that sends (not --no-email): its outcomes say "up to date"
    finished_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # Prometheus compares it with its clock
    workspaces: tuple[WorkspaceMetrics, ...] = ()


def render_metrics(metrics: RunMetrics, previous_text: str | None = None) -> bytes:
    """This run's facts, plus the other trigger's run facts from `previous_text`."""
    from prometheus_client import generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.registry import Collector

    # Families of plain samples, not live Gauges: about 3 times faster for 10,000 workspaces.
    families = {name: GaugeMetricFamily(name, text, labels=_LABELS[name]) for name, text in _HELP.items()}
    for line in (previous_text or "").splitlines():
        if not line.startswith("wa_export_last_run_"):  # a workspace line costs this check, not a parse
            continue
        with suppress(ValueError):  # a line that does not parse is left out
            for sample in (sample for family in text_string_to_metric_families(line) for sample in family.samples):
                if sample.name in families and sample.labels.get("trigger") not in (None, metrics.trigger):
                    labels = [sample.labels.get(label, "") for label in _LABELS[sample.name]]
                    families[sample.name].add_metric(labels, sample.value)
    run = [metrics.trigger]
    families["wa_export_last_run_timestamp_seconds"].add_metric(run, metrics.finished_at.timestamp())
    families["wa_export_last_run_duration_seconds"].add_metric(run, round(metrics.duration_seconds, 3))
    families["wa_export_last_run_exit_code"].add_metric(run, metrics.exit_code)
    families["wa_export_last_run_messages_exported"].add_metric(run, metrics.messages_exported)
    for outcome, count in sorted(Counter(metrics.outcomes.values()).items()):
        families["wa_export_last_run_workspaces"].add_metric([*run, outcome], count)
    for workspace in metrics.workspaces:
        label = [workspace.workspace_id]
        if workspace.last_success_at is not None:
            families["wa_export_workspace_last_success_timestamp_seconds"].add_metric(
                label, workspace.last_success_at.timestamp()
            )
        families["wa_export_workspace_consecutive_failures"].add_metric(label, workspace.consecutive_failures)
        if workspace.waiting_messages is not None:
            families["wa_export_workspace_waiting_messages"].add_metric(label, workspace.waiting_messages)
            age = round(workspace.oldest_waiting_age_seconds or 0.0, 3)
            families["wa_export_workspace_oldest_waiting_age_seconds"].add_metric(label, age)

    class _ThisRun(Collector):
        def collect(self) -> Iterable[Metric]:
            return [family for family in families.values() if family.samples]

    return generate_latest(_ThisRun())


def write_metrics_file(path: Path, metrics: RunMetrics) -> None:
    """Replace `path` atomically (not prometheus_client's write_to_textfile: umask mode, no fsync); OSError."""
    previous: str | None = None
    with suppress(OSError, UnicodeDecodeError):
        previous = path.read_text(encoding="utf-8")
    replace_file(path, render_metrics(metrics, previous), 0o644)  # ids and counts; node_exporter is another user


def collect_metrics(settings: Settings | None, facts: RunMetrics, store: Store | None = None) -> RunMetrics:
    """Per-workspace facts only when MongoDB answered during the run (exit 0 or 1) and still does."""
    workspaces: tuple[WorkspaceMetrics, ...] = ()
    if settings is not None and facts.exit_code in (ExitCode.OK, ExitCode.FAILED):
        with (
            suppress(MongoUnavailable, PyMongoError),
            open_store(settings) if store is None else nullcontext(store) as used,
        ):
            workspaces = tuple(_workspace_metrics(used, facts))
    return replace(facts, finished_at=datetime.now(UTC), workspaces=workspaces)


def _workspace_metrics(store: Store, facts: RunMetrics) -> Iterator[WorkspaceMetrics]:
    workspaces = store.active_workspaces()
    documents = read_state_documents(store, [workspace.id for workspace in workspaces])
    now = store.database_now()
    for workspace in workspaces:
        document: Mapping[str, Any] = documents.get(workspace.id, {})
        failures = count_or_zero(document.get("consecutive_failures"))
        outcome = facts.outcomes.get(workspace.id)
        waiting, age = None, None
        if failures or document.get("in_flight") or outcome == "failed":
            try:
                start = position_key(store.settings, document, now)
            except ForeignCursor:
                start = None  # the run refused it and said why; how many wait is unknown
            if start is not None:
                counted = count_waiting(store, workspace, start, WAITING_COUNT_CAP)
                waiting = counted.count
                age = max(0.0, (now - counted.oldest_at).total_seconds()) if counted.oldest_at is not None else 0.0
        elif facts.moves_cursors and outcome in ("completed", "no_messages"):  # up to date
            waiting, age = 0, 0.0
        yield WorkspaceMetrics(workspace.id, as_utc_or_none(document.get("last_success_at")), failures, waiting, age)


@dataclass
class RunRecorder:  # writes the metrics file however `export` ends; `finish` returns a warning if it cannot
    explicit_path: Path | None
    trigger: str
    enabled: bool = True  # off for --dry-run and for --workers children (the parent writes)
    started: float = field(default_factory=time.monotonic)
    settings: Settings | None = None
    facts: RunMetrics | None = None

    def use(self, settings: Settings) -> None:
        self.settings = settings
        self.path()  # an unusable --metrics-file: ConfigError (exit 2) before any work

    def ran(self, result: RunResult | WorkersResult, request: ExportRequest) -> None:
        delivered = sum(item.message_count for item in result.workspaces if item.outcome in ("completed", "written"))
        outcomes = {item.workspace_id: item.outcome for item in result.workspaces}
        self.facts = RunMetrics(request.trigger, result.exit_code, 0.0, outcomes, delivered, request.moves_cursors)

    def path(self) -> Path | None:
        if self.explicit_path is not None:
            return metrics_file_path(str(self.explicit_path), "--metrics-file")
        return self.settings.export_metrics_file if self.settings is not None else None

    def finish(self, exit_code: int) -> str | None:
        try:
            if not self.enabled or (path := self.path()) is None:
                return None
        except ConfigError:
            return None  # already reported as the command's own error (exit 2)
        elapsed = time.monotonic() - self.started
        # No result (bad settings, MongoDB unreachable, an interruption): how it ended and how long it took.
        facts = self.facts or RunMetrics(self.trigger, exit_code, elapsed)
        facts = replace(facts, exit_code=exit_code, duration_seconds=elapsed)
        try:
            write_metrics_file(path, collect_metrics(self.settings, facts))
        except OSError as error:
            return f"WARNING: could not write the metrics file {path} ({error.strerror or error}); the run's exit code is unchanged: make its folder writable for this user."
        return None
