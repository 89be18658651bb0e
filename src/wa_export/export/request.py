"""The operator commands' logic, between the CLI (parsing, rendering) and the library.

Each function takes validated settings and plain values, and returns data the
CLI renders. Errors an operator can cause are raised as `UsageProblem` (exit 2);
MongoDB outages as `MongoUnavailable` (exit 3).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from pymongo.errors import OperationFailure, PyMongoError

from wa_export.addresses import outside_allowed_domains, parse_address_list
from wa_export.clock import parse_time, utc_now
from wa_export.commands.cleanup import CleanupResult, run_cleanup
from wa_export.commands.stats import (
    EXPORT_STATUSES,
    LogsReport,
    StatsReport,
    export_log_entries,
    stats_report,
    system_log_entries,
)
from wa_export.errors import ConfigError, MongoUnavailable, UsageProblem
from wa_export.export import workers as workers_module
from wa_export.export.run import ExportRequest, RunObserver, RunResult, run_export
from wa_export.redaction import redact
from wa_export.settings import Settings
from wa_export.store.connection import (
    AUTH_FAILED_CODES,
    Store,
    describe_mongo_error,
    parse_workspace_id,
)
from wa_export.store.export_state import Window


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
    """Turn `export` options into a request; any option of the manual set makes it manual (SPEC §4)."""
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
    count: int, request: ExportRequest, env_file: Path | None, stop_requested: threading.Event
) -> workers_module.WorkersResult:
    """One scheduled run shared by `count` child processes (see workers.py)."""
    flags = [flag for flag, on in (("--dry-run", request.dry_run), ("--no-email", not request.send_email)) if on]
    return workers_module.run_workers(
        count,
        workspace_ids=request.workspace_ids,
        env_file=env_file,
        extra_args=flags,
        stop_requested=stop_requested,
    )


@contextmanager
def open_store(settings: Settings) -> Iterator[Store]:
    store = Store.open(settings)
    try:
        yield store
    finally:
        store.close()


def export(
    settings: Settings,
    request: ExportRequest,
    observer: RunObserver | None = None,
    stop_requested: threading.Event | None = None,
) -> RunResult:
    with open_store(settings) as store, _mongo_errors(settings):
        return run_export(settings, store, request, observer, stop_requested)


# --- cleanup, stats, logs (issue 3) ---------------------------------------------------

STATS_MAX_DAYS = 366
LOGS_MAX_LIMIT = 1000
CLEANUP_MAX_DAYS = 36_500


def cleanup(settings: Settings, days: int | None, dry_run: bool) -> CleanupResult:
    """Delete old workbooks; the event write comes after the files (see cleanup.run_cleanup)."""
    chosen = settings.export_cleanup_days if days is None else days
    if not 0 <= chosen <= CLEANUP_MAX_DAYS:
        raise UsageProblem(f"--days must be between 0 and {CLEANUP_MAX_DAYS}, got {chosen}.")
    return run_cleanup(settings, chosen, dry_run)


def stats(settings: Settings, workspace_id: str | None, days: int) -> StatsReport:
    if not 1 <= days <= STATS_MAX_DAYS:
        raise UsageProblem(f"--days must be between 1 and {STATS_MAX_DAYS}, got {days}.")
    if workspace_id is not None:
        parse_workspace_id(workspace_id)  # a malformed id is a usage error even with MongoDB down
    with open_store(settings) as store, _mongo_errors(settings):
        return stats_report(store, settings, workspace_id, days, utc_now())


def logs(settings: Settings, workspace_id: str | None, limit: int, status: str | None, system: bool) -> LogsReport:
    if not 1 <= limit <= LOGS_MAX_LIMIT:
        raise UsageProblem(f"--limit must be between 1 and {LOGS_MAX_LIMIT}, got {limit}.")
    if status is not None:
        status = status.strip().lower()
        if status not in EXPORT_STATUSES:
            raise UsageProblem(f"--status must be one of {', '.join(EXPORT_STATUSES)}, got {status!r}.")
    if system and (status is not None or workspace_id is not None):
        raise UsageProblem("--system shows the tool's own events: it takes neither --status nor a WORKSPACE_ID.")
    if workspace_id is not None:
        parse_workspace_id(workspace_id)
    with open_store(settings) as store, _mongo_errors(settings):
        if system:
            return system_log_entries(store, limit)
        return export_log_entries(store, workspace_id, status, limit)


@contextmanager
def _mongo_errors(settings: Settings) -> Iterator[None]:
    """A connection lost after the initial ping is still "MongoDB unreachable" (exit 3)."""
    try:
        yield
    except OperationFailure as error:
        if error.code in AUTH_FAILED_CODES:
            raise MongoUnavailable(describe_mongo_error(error, settings)) from None
        detail = redact(str(error.details.get("errmsg") if error.details else error)[:300], settings.secrets())
        raise MongoUnavailable(
            f"MongoDB refused the query ({detail}); check that the MONGODB_URI user may read "
            f"database {settings.mongodb_database!r}."
        ) from None
    except PyMongoError as error:
        raise MongoUnavailable(describe_mongo_error(error, settings)) from None
