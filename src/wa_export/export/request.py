"""The operator commands' logic, between the CLI (parsing, rendering) and the library.

Each function takes validated settings and plain values, and returns data the
CLI renders. Errors an operator can cause are raised as `UsageProblem` (exit 2);
MongoDB outages as `MongoUnavailable` (exit 3).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

from wa_export.addresses import outside_allowed_domains, parse_address_list
from wa_export.clock import Window, parse_time, utc_now
from wa_export.errors import ConfigError, UsageProblem
from wa_export.export import preflight
from wa_export.export import workers as workers_module
from wa_export.export.context import ExportRequest
from wa_export.export.results import RunObserver, RunResult
from wa_export.export.run import run_export
from wa_export.settings import Settings
from wa_export.store.connection import (
    mongo_errors,
    open_store,
)


def build_export_request(
    settings: Settings,
    *,
    workspace_ids: Sequence[str] = (),
    hours: float | None = None,
    since: str | None = None,
    until: str | None = None,
    email: Sequence[str] = (),
    no_email: bool = False,
    dry_run: bool = False,
) -> ExportRequest:
    """Turn `export` options into a request; any option of the manual set makes it manual."""
    if email and no_email:
        raise UsageProblem("--email and --no-email contradict each other; use one of them.")
    if hours is not None and since is not None:
        raise UsageProblem("--hours and --since both set the window start; use one of them.")
    if hours is not None and not (0 < hours <= 24 * 366):
        raise UsageProblem(f"--hours must be greater than 0 and at most a year, got {hours:g}.")

    overrides: tuple[str, ...] = ()
    if email:
        try:
            overrides = parse_address_list(",".join(email), "--email")
        except ConfigError as error:
            raise UsageProblem(str(error)) from None
        refused = outside_allowed_domains(overrides, settings.export_allowed_email_domains)
        if refused:
            raise UsageProblem(
                f"--email {', '.join(refused)} is outside EXPORT_ALLOWED_EMAIL_DOMAINS "
                f"({', '.join(settings.export_allowed_email_domains)}); use an address in an allowed domain."
            )

    window: Window | None = None
    if hours is not None or since is not None or until is not None or overrides:
        now = utc_now()
        end = parse_time(until, "--until", settings.export_timezone) if until else now
        if since is not None:
            start = parse_time(since, "--since", settings.export_timezone)
        else:
            start = end - timedelta(hours=hours if hours is not None else 24)
        window = Window(start, end)
        if window.is_empty:
            raise UsageProblem("The window is empty: --since must be before --until.")

    return ExportRequest(
        workspace_ids=tuple(workspace_ids),
        window=window,
        email_override=overrides,
        send_email=not no_email,
        dry_run=dry_run,
    )


def apply_worker_options(request: ExportRequest, workers: int, worker_slot: str | None) -> ExportRequest:
    """Validate --workers / the hidden --worker-slot and attach the slot to the request."""
    try:
        workers_module.check_request(workers, is_manual=request.is_manual)
        if worker_slot is None:
            return request
        workers_module.check_slot_request(request.is_manual)
        return dataclasses.replace(request, worker_slot=workers_module.parse_worker_slot(worker_slot))
    except workers_module.WorkerUsageError as error:
        raise UsageProblem(str(error)) from None


def export_in_workers(
    count: int,
    request: ExportRequest,
    env_file: Path | None,
    stop_requested: threading.Event,
    settings: Settings | None = None,
) -> workers_module.WorkersResult:
    """One scheduled run shared by `count` child processes (see workers.py).

    With `settings`, the merged result carries the run's warnings: each child
    sees only its share of the workspaces, the parent sees them all.
    """
    flags = [flag for flag, on in (("--dry-run", request.dry_run), ("--no-email", not request.send_email)) if on]
    merged = workers_module.run_workers(
        count,
        workspace_ids=request.workspace_ids,
        env_file=env_file,
        extra_args=flags,
        stop_requested=stop_requested,
    )
    if settings is not None:
        # What a child found in the data it exports (a workspace stored twice); the rest is judged here.
        merged.warnings = [
            preflight.RunWarning(**warning)
            for worker in merged.workers
            for warning in (worker.document or {}).get("warnings") or []
            if warning.get("kind") == "duplicate_workspace"
        ]
        merged.warnings += preflight.run_warnings(
            settings,
            [(ws["workspace_id"], ws.get("workspace_name") or "") for ws in merged.workspaces],
            covers_all_active=(
                not request.workspace_ids and not merged.interrupted and all(w.document for w in merged.workers)
            ),
            failed_ids={ws["workspace_id"] for ws in merged.workspaces if ws.get("outcome") == "failed"},
            without_address={ws["workspace_id"] for ws in merged.workspaces if ws.get("recipients_source") == "none"},
        )
    return merged


def export(
    settings: Settings,
    request: ExportRequest,
    observer: RunObserver | None = None,
    stop_requested: threading.Event | None = None,
) -> RunResult:
    with open_store(settings) as store, mongo_errors(settings):
        result = run_export(settings, store, request, observer, stop_requested)
    result.warnings = [
        *result.warnings,
        *preflight.run_warnings(
            settings,
            [(workspace.workspace_id, workspace.workspace_name) for workspace in result.workspaces],
            covers_all_active=not request.workspace_ids and request.worker_slot is None and not result.interrupted,
            email_override=bool(request.email_override),
            failed_ids={workspace.workspace_id for workspace in result.workspaces if workspace.outcome == "failed"},
            without_address={ws.workspace_id for ws in result.workspaces if ws.recipients_source == "none"},
        ),
    ]
    return result
