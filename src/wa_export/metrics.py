"""The metrics file: a Prometheus textfile-collector file written after every export run.

`write_metrics_file` takes plain facts (`RunMetrics`) and replaces the file
atomically: the text goes to a hidden temp file in the same directory (never
named `*.prom`, so node_exporter cannot read it half-written), is fsynced and
made mode 0644 (node_exporter runs as another user; the file holds workspace
ids and counts, no personal data), then renamed over the old file. A reader
sees the old file or the new one, never a mix.

The run facts carry a `trigger` label. A run replaces its own trigger's
samples and keeps the other trigger's from the previous file, so a manual
export at noon does not hide that the scheduled runs are failing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client.core import Metric

FILE_MODE = 0o644

RUN_TIMESTAMP = "wa_export_last_run_timestamp_seconds"
RUN_DURATION = "wa_export_last_run_duration_seconds"
RUN_EXIT_CODE = "wa_export_last_run_exit_code"
RUN_MESSAGES = "wa_export_last_run_messages_exported"
RUN_WORKSPACES = "wa_export_last_run_workspaces"
WORKSPACE_LAST_SUCCESS = "wa_export_workspace_last_success_timestamp_seconds"
WORKSPACE_FAILURES = "wa_export_workspace_consecutive_failures"
WORKSPACE_WAITING = "wa_export_workspace_waiting_messages"
WORKSPACE_OLDEST_AGE = "wa_export_workspace_oldest_waiting_age_seconds"

_RUN_HELP = {
    RUN_TIMESTAMP: "Unix time (this host's clock) the last export run of this trigger ended.",
    RUN_DURATION: "Wall time of the last export run of this trigger, in seconds.",
    RUN_EXIT_CODE: "Exit code of the last export run of this trigger (0 ok, 1 some work failed, 2 usage/config, 3 MongoDB unreachable).",
    RUN_MESSAGES: "Messages the last export run of this trigger delivered (or wrote, with --no-email).",
    RUN_WORKSPACES: "Workspaces per outcome in the last export run of this trigger.",
}
_WORKSPACE_HELP = {
    WORKSPACE_LAST_SUCCESS: "Unix time (database clock) of the workspace's last successful scheduled delivery.",
    WORKSPACE_FAILURES: "Consecutive failed scheduled deliveries of the workspace.",
    WORKSPACE_WAITING: "Messages that arrived at or after the workspace's cursor and are not delivered yet.",
    WORKSPACE_OLDEST_AGE: "Seconds since the oldest undelivered message of the workspace arrived (0: none waiting).",
}


@dataclass(frozen=True)
class WorkspaceMetrics:
    workspace_id: str
    last_success_at: datetime | None = None
    consecutive_failures: int = 0
    # None: this run cannot tell (the series is left out rather than guessed)
    waiting_messages: int | None = None
    oldest_waiting_age_seconds: float | None = None


@dataclass(frozen=True)
class RunMetrics:
    trigger: str  # "scheduled" or "manual"
    finished_at: datetime
    duration_seconds: float
    exit_code: int
    messages_exported: int = 0
    workspaces_by_outcome: Mapping[str, int] = field(default_factory=dict)
    workspaces: tuple[WorkspaceMetrics, ...] = ()


@dataclass(frozen=True)
class _Sample:
    labels: tuple[tuple[str, str], ...]
    value: float


def render_metrics(metrics: RunMetrics, previous_text: str | None = None) -> bytes:
    """The file's text: this run's facts, plus the other trigger's run facts from `previous_text`."""
    run_samples: dict[str, list[_Sample]] = {name: [] for name in _RUN_HELP}
    for name, sample in _other_trigger_samples(previous_text, metrics.trigger):
        run_samples[name].append(sample)
    trigger = (("trigger", metrics.trigger),)
    run_samples[RUN_TIMESTAMP].append(_Sample(trigger, metrics.finished_at.timestamp()))
    run_samples[RUN_DURATION].append(_Sample(trigger, round(metrics.duration_seconds, 3)))
    run_samples[RUN_EXIT_CODE].append(_Sample(trigger, float(metrics.exit_code)))
    run_samples[RUN_MESSAGES].append(_Sample(trigger, float(metrics.messages_exported)))
    for outcome, count in sorted(metrics.workspaces_by_outcome.items()):
        run_samples[RUN_WORKSPACES].append(_Sample((*trigger, ("outcome", outcome)), float(count)))

    workspace_samples: dict[str, list[_Sample]] = {name: [] for name in _WORKSPACE_HELP}
    for workspace in metrics.workspaces:
        label = (("workspace_id", workspace.workspace_id),)
        if workspace.last_success_at is not None:
            workspace_samples[WORKSPACE_LAST_SUCCESS].append(_Sample(label, workspace.last_success_at.timestamp()))
        workspace_samples[WORKSPACE_FAILURES].append(_Sample(label, float(workspace.consecutive_failures)))
        if workspace.waiting_messages is not None:
            workspace_samples[WORKSPACE_WAITING].append(_Sample(label, float(workspace.waiting_messages)))
            age = workspace.oldest_waiting_age_seconds or 0.0
            workspace_samples[WORKSPACE_OLDEST_AGE].append(_Sample(label, round(age, 3)))

    # Imported here: only runs that write a metrics file pay for it.
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)  # private: never the process-global registry
    registry.register(_Families({**_RUN_HELP, **_WORKSPACE_HELP}, {**run_samples, **workspace_samples}))
    return generate_latest(registry)


def write_metrics_file(path: Path, metrics: RunMetrics) -> None:
    """Replace `path` atomically with this run's metrics; raises OSError (the old file then stays as it was)."""
    previous: str | None
    try:
        previous = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        previous = None
    atomic_write(path, render_metrics(metrics, previous))


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Temp file beside `path`, fsync, chmod, rename over `path`, fsync the folder."""
    descriptor, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)  # explicit: the service's UMask=0077 would make it 0600
            os.fsync(handle.fileno())
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
        raise
    with contextlib.suppress(OSError):  # the rename is durable once the folder is; best effort
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class _Families:
    """A prometheus_client collector (it needs only `collect`) of ready-made gauge samples."""

    def __init__(self, help_texts: Mapping[str, str], samples: Mapping[str, list[_Sample]]) -> None:
        self.help_texts = help_texts
        self.samples = samples

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        for name, help_text in self.help_texts.items():
            found = self.samples.get(name, [])
            if not found:
                continue
            label_names = [label for label, _ in found[0].labels]
            family = GaugeMetricFamily(name, help_text, labels=label_names)
            for sample in found:
                family.add_metric([value for _, value in sample.labels], sample.value)
            yield family


def _other_trigger_samples(previous_text: str | None, trigger: str) -> Iterable[tuple[str, _Sample]]:
    """The previous file's run facts of the other trigger; nothing if it is missing or unreadable."""
    if not previous_text:
        return []
    from prometheus_client.parser import text_string_to_metric_families

    kept: list[tuple[str, _Sample]] = []
    try:
        for family in text_string_to_metric_families(previous_text):
            for sample in family.samples:
                if sample.name not in _RUN_HELP or sample.labels.get("trigger") in (None, trigger):
                    continue
                labels: tuple[tuple[str, str], ...] = (("trigger", sample.labels["trigger"]),)
                if sample.name == RUN_WORKSPACES:
                    labels = (*labels, ("outcome", sample.labels.get("outcome", "")))
                kept.append((sample.name, _Sample(labels, float(sample.value))))
    except (ValueError, TypeError, KeyError):
        return []  # a file we cannot read is replaced, not merged
    return kept
