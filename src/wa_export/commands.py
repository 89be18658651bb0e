"""The operator commands' logic, between the CLI (parsing, rendering) and the library.

Each function takes validated settings and plain values, and returns data the
CLI renders. Errors an operator can cause are raised as `UsageProblem` (exit 2);
MongoDB outages as `MongoUnavailable` (exit 3).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from .config import ConfigError, Settings, outside_allowed_domains, parse_address_list
from .exporter import ExportRequest, RunObserver, RunResult, run_export
from .leases import Window, utc_now
from .mongo import Store


class UsageProblem(Exception):
    """The operator asked for something impossible; one sentence, exit 2."""


def parse_time(text: str, option: str, zone: ZoneInfo) -> datetime:
    """ISO 8601; a naive value is in EXPORT_TIMEZONE. Returns an aware UTC datetime."""
    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise UsageProblem(
            f"{option} {text!r} is not an ISO 8601 time; use e.g. 2026-01-15T14:30 or 2026-01-15T14:30:00+02:00."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    moment = moment.astimezone(timezone.utc)
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


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
    with open_store(settings) as store:
        return run_export(settings, store, request, observer, stop_requested)
