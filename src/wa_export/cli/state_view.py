"""`wa-export state`: a table on a terminal, key=value lines under cron, or JSON; times in EXPORT_TIMEZONE."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from rich import box
from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output, short_time, workspace_cell
from wa_export.clock import SECOND_FORMAT
from wa_export.errors import ExitCode, UsageProblem
from wa_export.units import format_age, local_time

if TYPE_CHECKING:  # cli/app.py imports this module for the help texts below: no MongoDB code at start-up
    from wa_export.commands.cursor_move import CursorMove
    from wa_export.commands.state import StateReport, WorkspaceReport
    from wa_export.settings import Settings

STATE_ID_HELP = "One workspace (exact counts); without it, all active ones."
MOVE_TO_HELP = (
    "Move WORKSPACE_ID's cursor to this arrival time (ISO 8601, naive = EXPORT_TIMEZONE): "
    "back re-delivers from then on, forward skips what arrived before."
)
MOVE_PAST_HELP = (
    "Move WORKSPACE_ID's cursor just past this one message (its _id): it is never delivered, "
    "messages that arrived after it, even in the same second, still are."
)


def render_state(
    output: Output, settings: Settings, workspace_id: str | None, move_to: str | None, move_past: str | None = None
) -> int:
    if move_to is not None and move_past is not None:
        raise UsageProblem("--move-to and --move-past both move the cursor: give one of them.")
    from wa_export.commands import cursor_move
    from wa_export.commands import state as state_command

    if move_to is not None:
        render_move(output, cursor_move.move_cursor(settings, workspace_id, move_to), settings)
    elif move_past is not None:
        render_move(output, cursor_move.move_cursor_past(settings, workspace_id, move_past), settings)
    else:
        render_report(output, state_command.state(settings, workspace_id), settings)
    return ExitCode.OK


def render_report(output: Output, report: StateReport, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": True, **report.as_dict()})
        return
    if not report.workspaces:
        output.line("No active workspaces.")
        return
    if output.interactive:
        output.table(_state_table(report, settings))
        if report.waiting_count_cap is not None and any(w.waiting and w.waiting.capped for w in report.workspaces):
            output.line(f"Counts stop at {report.waiting_count_cap}; wa-export state WORKSPACE_ID counts exactly.")
        return
    for workspace in report.workspaces:  # under cron, a pipe: one greppable line per workspace
        output.log("INFO", "state " + " ".join(_plain_fields(workspace, settings)))


def render_move(output: Output, move: CursorMove, settings: Settings) -> None:
    from wa_export.store.arrivals import key_text

    if output.json_output:
        output.json({"ok": True, **move.as_dict()})
        return
    if move.direction == "already_past":
        where = f"{_time(move.new_time, settings)} (key {key_text(move.new_key)})"
        output.line(
            f"Workspace {move.workspace_id}: message {move.past_message_id} (arrived {_time(move.requested_time, settings)}) "
            f"is already behind the delivery position {where}: it was delivered or skipped before; nothing was moved."
        )
        return
    old = (
        f"{_time(move.old_time, settings)} (key {key_text(move.old_key)}, {move.old_source or 'unknown source'})"
        if move.old_key is not None
        else "no cursor"
    )
    new = f"{_time(move.new_time, settings)} (key {key_text(move.new_key)})"
    consequence = {
        "back": "the next scheduled run delivers again what arrived from then on",
        "forward": "what arrived before then will not be delivered",
        "unchanged": "the cursor was already there",
        "created": "the next scheduled run starts there",
    }[move.direction]
    if move.past_message_id is not None:
        consequence = (
            f"message {move.past_message_id} (arrived {_time(move.requested_time, settings)}) will not be delivered; "
            "what arrived after it, in the same second too, will"
        )
    change = (
        f"cursor created at {new}" if move.old_key is None else f"cursor moved {move.direction} from {old} to {new}"
    )
    output.line(f"Workspace {move.workspace_id}: {change}: {consequence}.")
    after = move.state_after
    if after is not None and after.waiting is not None:
        age = _oldest_age(after)
        oldest = f", the oldest arrived {age} ago" if age else ""
        output.line(f"Messages waiting from the new cursor: {_waiting_count(after)}{oldest}.")
    output.line(f"Recorded in system_logs (host {move.host}); see wa-export logs --system.")


def _state_table(report: StateReport, settings: Settings) -> Table:
    title = f"Delivery state, times in {report.timezone_name} (database clock {_time(report.database_now, settings)})"
    table = Table(title=escape(title), box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Workspace / id", overflow="fold", min_width=24)
    table.add_column("Cursor", no_wrap=True)
    table.add_column("Waiting\n(oldest)", justify="right", no_wrap=True)
    table.add_column("Lease", no_wrap=True)
    table.add_column("Last success", no_wrap=True)
    table.add_column("Fails", justify="right", no_wrap=True)
    table.add_column("Notes", overflow="fold", min_width=16)
    for workspace in report.workspaces:
        failures = workspace.consecutive_failures
        age = _oldest_age(workspace)
        table.add_row(
            workspace_cell(workspace.workspace_name, workspace.workspace_id),
            _cursor_cell(workspace, settings),
            _waiting_count(workspace) + (f"\n[dim]{age}[/dim]" if age else ""),
            f"[yellow]held[/yellow]\n[dim]to {local_time(workspace.lease_expires_at, settings, '%H:%M')}[/dim]"
            if workspace.lease_held
            else "free",
            short_time(workspace.last_success_at, settings) or "never",
            f"[bold red]{failures}[/bold red]" if failures else "0",
            escape("; ".join(_notes(workspace, settings))),
        )
    return table


def _cursor_cell(workspace: WorkspaceReport, settings: Settings) -> str:
    if workspace.has_cursor:
        text = f"{short_time(workspace.cursor_time, settings)}\n[dim]{escape(workspace.cursor_source or 'unknown source')}[/dim]"
        if workspace.cursor_ahead_of_database_clock:
            text = f"[bold red]{text}[/bold red]"
        return text
    if workspace.legacy_watermark is not None:
        return f"{short_time(workspace.legacy_watermark, settings)}\n[dim]v1 watermark[/dim]"
    return "[yellow]none[/yellow]"


def _notes(workspace: WorkspaceReport, settings: Settings) -> list[str]:
    notes = []
    if workspace.cursor_ahead_of_database_clock:
        notes.append("cursor ahead of the database clock")
    if workspace.legacy_watermark is not None:
        notes.append("becomes a cursor on the next run")
    elif not workspace.has_cursor and workspace.first_cursor is not None:
        starts_at = workspace.next_run_starts_at
        notes.append(
            f"next run starts {short_time(starts_at, settings)} (original service)"
            if starts_at is not None
            else f"next run starts {settings.export_interval_minutes} min before its end"
        )
    if workspace.in_flight:
        part, parts = workspace.in_flight.get("part"), workspace.in_flight.get("parts")
        started = workspace.in_flight.get("started_at")
        notes.append(
            "in flight"
            + (f" part {part}/{parts}" if part is not None and parts is not None else "")
            + (f" since {short_time(started, settings)}" if isinstance(started, datetime) else "")
        )
    if workspace.last_possible_duplicate_at is not None:
        notes.append(f"possible duplicate {short_time(workspace.last_possible_duplicate_at, settings)}")
    if workspace.consecutive_failures and workspace.last_error:
        notes.append(workspace.last_error)
    return notes


def _no_cursor_text(workspace: WorkspaceReport, settings: Settings) -> str:
    if workspace.legacy_watermark is not None:
        return (
            f"v1 watermark {_time(workspace.legacy_watermark, settings)}: the next scheduled run turns it into a cursor"
        )
    first, starts_at = workspace.first_cursor, workspace.next_run_starts_at
    if starts_at is not None:
        return (
            f"no cursor yet: the next scheduled run starts at {_time(starts_at, settings)} "
            "(where the original service's last export ended)"
        )
    if first is not None:
        return (
            "no cursor yet: the next scheduled run starts "
            f"{settings.export_interval_minutes} min (EXPORT_INTERVAL_MINUTES) before its own end"
        )
    return "no cursor yet"


def _plain_fields(workspace: WorkspaceReport, settings: Settings) -> list[str]:
    from wa_export.store.arrivals import key_text

    fields = [
        f"workspace={workspace.workspace_id}",
        f"name={json.dumps(workspace.workspace_name, ensure_ascii=False)}",
    ]
    if workspace.has_cursor:
        fields += [
            f"cursor={_iso_local(workspace.cursor_time, settings)}",
            f"cursor_key={key_text(workspace.cursor_key)}",
            f"cursor_source={workspace.cursor_source or 'unknown'}",
        ]
        if workspace.cursor_ahead_of_database_clock:
            fields.append("cursor_ahead_of_database_clock=true")
    else:
        fields.append("cursor=none")
        if workspace.legacy_watermark is not None:
            fields.append(f"legacy_watermark={_iso_local(workspace.legacy_watermark, settings)}")
        fields.append(f"note={json.dumps(_no_cursor_text(workspace, settings), ensure_ascii=False)}")
    fields.append(f"waiting={_waiting_count(workspace) if workspace.waiting else 'unknown'}")
    if workspace.oldest_waiting_age_seconds is not None and workspace.waiting is not None:
        fields.append(f"oldest_waiting={_iso_local(workspace.waiting.oldest_at, settings)}")
        fields.append(f"oldest_waiting_age_seconds={int(workspace.oldest_waiting_age_seconds)}")
    if workspace.lease_held:
        fields += [
            f"lease=held lease_owner={workspace.lease_owner}",
            f"lease_expires={_iso_local(workspace.lease_expires_at, settings)}",
        ]
    else:
        fields.append("lease=free")
    fields += [
        f"last_success={_iso_local(workspace.last_success_at, settings) or 'never'}",
        f"consecutive_failures={workspace.consecutive_failures}",
    ]
    if workspace.last_error:
        fields.append(f"last_error={json.dumps(workspace.last_error, ensure_ascii=False)}")
    if workspace.last_possible_duplicate_at is not None:
        fields.append(f"last_possible_duplicate={_iso_local(workspace.last_possible_duplicate_at, settings)}")
    if workspace.in_flight:
        fields.append(f"in_flight={json.dumps(_in_flight_text(workspace.in_flight, settings), ensure_ascii=False)}")
    return fields


def _waiting_count(workspace: WorkspaceReport) -> str:
    waiting = workspace.waiting
    if waiting is None:
        return "—"
    return f"{waiting.count}+" if waiting.capped else str(waiting.count)


def _oldest_age(workspace: WorkspaceReport) -> str:
    age = workspace.oldest_waiting_age_seconds
    return "" if age is None else format_age(timedelta(seconds=age))


def _in_flight_text(in_flight: Mapping[str, Any], settings: Settings) -> str:
    from wa_export.store.arrivals import time_of

    parts = []
    part, total = in_flight.get("part"), in_flight.get("parts")
    if part is not None and total is not None:
        parts.append(f"part {part} of {total}")
    low, high = time_of(in_flight.get("from_key")), time_of(in_flight.get("to_key"))
    if low is not None and high is not None:
        parts.append(f"arrivals {_time(low, settings)} to {_time(high, settings)}")
    if in_flight.get("run_id"):
        parts.append(f"run {in_flight['run_id']}")
    started = in_flight.get("started_at")
    if isinstance(started, datetime):
        parts.append(f"since {_time(started, settings)}")
    return ", ".join(parts) or "yes"


def _time(moment: datetime | None, settings: Settings) -> str:
    return local_time(moment, settings, SECOND_FORMAT)


def _iso_local(moment: datetime | None, settings: Settings) -> str:
    return "" if moment is None else moment.astimezone(settings.export_timezone).isoformat()
