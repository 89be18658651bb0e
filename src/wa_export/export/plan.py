"""The scheduled run's plan: one state read, one shared pass over [earliest cursor, end), laggards on their own.
Workspaces with messages, a pending failure or intent, or lagging get work (docs/design.md, "A scheduled run")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from wa_export.errors import ConfigError
from wa_export.export.results import NO_ADDRESS, RunContext, WorkspaceResult
from wa_export.recipients import Recipients, missing_hint
from wa_export.store import arrivals, logs, ownership
from wa_export.store.arrivals import Key
from wa_export.store.connection import Chat, Workspace
from wa_export.store.state import FirstCursor, IdleAdvance, WorkspaceState, first_cursor, read_states
from wa_export.units import local_time
from wa_export.workspace_settings import SCHEDULE, TIME_ZONE, Decision, Schedule, ServedSlot, decide, resolve

HORIZON_INTERVALS = 4
HORIZON_MINIMUM = timedelta(hours=1)
CURSOR_AHEAD = "cursor_ahead_of_database_clock"
NOTHING_NEW = "nothing new since the previous export"
AMBIGUOUS_CHAT = "ambiguous_chat"  # a message of a chat that names no single workspace (store/ownership.py)
# About this many bytes of messages (text + a fixed overhead each) the pass keeps for the deliveries.
PASS_DOCUMENT_BYTES = 32 * 1024 * 1024
_DOCUMENT_OVERHEAD_BYTES = 400


def horizon(interval_minutes: int) -> timedelta:
    """How far behind the end a cursor may be and still share the pass."""
    return max(timedelta(minutes=HORIZON_INTERVALS * interval_minutes), HORIZON_MINIMUM)


@dataclass(eq=False)  # one workspace's place in one run and what the plan learnt: compared by identity
class WorkItem:
    workspace: Workspace
    recipients: Recipients
    state: WorkspaceState
    zone: ZoneInfo  # the workspace's own time zone (its setting, else EXPORT_TIMEZONE)
    schedule: Schedule
    serves: ServedSlot | None  # the schedule slot a delivery that ends well records
    start: Key = field(init=False)  # where this run starts the workspace (its cursor, or its first cursor)
    first_cursor: FirstCursor | None = None
    current: bool = False  # covered by the shared pass (keys and chats below are complete)
    cursor_ahead: bool = False
    keys: list[Key] = field(default_factory=list)
    # The window's messages (key, document) as the pass read them; None when the pass could not keep them all.
    documents: list[tuple[Key, dict[str, Any]]] | None = field(default_factory=list)
    chats: dict[object, Chat] = field(default_factory=dict)  # by both id forms
    chat_ids: set[ObjectId] = field(default_factory=set)
    # From this key on the pass counted messages of chats of nobody (ambiguous_chat); None: it counted none.
    ambiguous_counted_from: Key | None = None


@dataclass
class Plan:
    work: list[WorkItem] = field(default_factory=list)
    idle: list[WorkItem] = field(default_factory=list)
    skipped: list[WorkspaceResult] = field(default_factory=list)
    run_anomalies: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def idle_advances(self) -> list[IdleAdvance]:
        """The idle cursors' bulk moves to the run's end; one pulled back from ahead of the clock moves only from
        exactly what was read."""
        return [
            IdleAdvance(
                item.workspace.id,
                item.state.cursor_key,
                item.state.exists,
                item.first_cursor.source if item.first_cursor is not None else None,
                covered=not item.cursor_ahead,
                serves=item.serves,
            )
            for item in self.idle
        ]


def make_plan(ctx: RunContext, workspaces: Sequence[Workspace]) -> Plan:
    settings, store, request, key, plan = ctx.settings, ctx.store, ctx.request, ctx.key, Plan()
    # Before anything can move a cursor: a key that sees no message would move every cursor past them all.
    arrival_check = arrivals.check_arrival_key(store.messages, key, ends=request.counts_run_anomalies)
    if arrival_check.unusable is not None:
        raise ConfigError(arrival_check.unusable)
    if arrival_check.partial is not None and request.counts_run_anomalies:
        plan.problems.append(arrival_check.partial)
    states = read_states(store, [w.id for w in workspaces] if request.workspace_ids else None)
    items: list[WorkItem] = []
    for workspace in workspaces:
        if workspace.status != "active":
            reason = f"workspace status is {workspace.status!r}, only active workspaces are exported on schedule"
            plan.skipped.append(WorkspaceResult.of(workspace, "skipped", reason=reason))
            continue
        recipients = ctx.recipients_for(workspace)
        zone_of, schedule_of = resolve(TIME_ZONE, workspace, settings), resolve(SCHEDULE, workspace, settings)
        zone, schedule = zone_of.value, schedule_of.value
        if zone is None or schedule is None:  # an invalid value in the workspace's document: this workspace only
            problem = zone_of.problem or schedule_of.problem
            plan.skipped.append(WorkspaceResult.of(workspace, "failed", recipients, reason=problem))
            continue
        state = states.get(workspace.id) or WorkspaceState(workspace.id)
        # Decided from the run's one state read: a workspace not due costs no command of its own.
        decision = decide(schedule, zone, ctx.run_time, state.served)
        if schedule.kind == "off" or (not decision.due and not ctx.without_address(recipients)):
            # off needs no address (manual exports only); any other is told to have one, due or not
            plan.skipped.append(not_due_result(ctx.in_zone(zone), workspace, recipients, schedule, decision))
        elif ctx.without_address(recipients):
            reason = f"{NO_ADDRESS}: {missing_hint(workspace.id, settings)}"
            plan.skipped.append(WorkspaceResult.of(workspace, "skipped", reason=reason))
        else:
            serves = None if decision.slot is None else ServedSlot(schedule.identity(zone), decision.slot)
            items.append(WorkItem(workspace, recipients, state, zone, schedule, serves))

    # The original service's last exports, for every workspace that needs a first cursor: one query.
    needing = [item.workspace.id for item in items if item.state.cursor_key is None and item.state.watermark is None]
    originals = logs.original_exports(store, needing, ctx.run_time)
    oldest_current = ctx.end_time - horizon(settings.export_interval_minutes)
    for item in list(items):
        if item.state.cursor_key is not None:
            try:
                item.start, item.cursor_ahead = ctx.start_at(item.workspace.id, item.state.cursor)
            except arrivals.ForeignCursor as error:
                # Written under another EXPORT_ARRIVAL_FIELD: refused, its cursor untouched, never translated.
                plan.skipped.append(WorkspaceResult.of(item.workspace, "failed", item.recipients, reason=str(error)))
                items.remove(item)
                continue
        else:
            watermark, original = item.state.watermark, originals.get(item.workspace.id)
            item.first_cursor = first_cursor(settings, ctx.end_time, ctx.run_time, watermark, original)
            item.start = item.first_cursor.key
        moment = arrivals.time_of(item.start)
        item.current = moment is not None and moment >= oldest_current

    current_items = [item for item in items if item.current]
    if current_items:
        pass_start = min(item.start for item in current_items)
        if pass_start < ctx.end_key:
            _shared_pass(ctx, plan, pass_start, current_items)
        if request.counts_run_anomalies:
            for item in items:
                item.ambiguous_counted_from = pass_start
    for item in items:  # the rest has nothing in [cursor, end): advanced in bulk
        (plan.work if not item.current or item.keys or item.state.pending else plan.idle).append(item)
    return plan


def not_due_result(
    ctx: RunContext, workspace: Workspace, recipients: Recipients, schedule: Schedule, decision: Decision
) -> WorkspaceResult:
    """A workspace its schedule does not deliver now: its cursor stays, its messages wait for the next slot."""
    reason = "its schedule is off: only manual exports deliver it"
    if decision.next_due is not None:
        next_due = local_time(decision.next_due, ctx.settings, zoned=True)
        reason = f"not due: schedule {schedule}, next delivery at the first run from {next_due}"
    return WorkspaceResult.of(workspace, "not_due", recipients, reason=reason, next_due=decision.next_due)


def _shared_pass(ctx: RunContext, plan: Plan, start: Key, items: Sequence[WorkItem]) -> None:
    """One read of [start, end) on the key's index, then the chats it names, by id."""
    by_chat: dict[ObjectId, list[Key]] = {}
    kept: dict[ObjectId, list[tuple[Key, dict[str, Any]]]] = {}
    over_budget: set[ObjectId] = set()  # chats with a message the pass did not keep
    budget, orphans = PASS_DOCUMENT_BYTES, 0
    read = arrivals.arrivals_between(ctx.store.messages, ctx.key, start, ctx.end_key, documents=True)
    for arrival, raw_chat_id, document in read:
        chat_id = ownership.chat_of_message(raw_chat_id)
        if chat_id is None:
            orphans += 1  # no chat id at all: a message of nobody
            continue
        by_chat.setdefault(chat_id, []).append(arrival)
        if chat_id in over_budget:
            continue
        content = document.get("content")
        budget -= _DOCUMENT_OVERHEAD_BYTES + (len(content) if isinstance(content, str) else 0)
        if budget < 0:
            over_budget.add(chat_id)
            kept.pop(chat_id, None)
            continue
        kept.setdefault(chat_id, []).append((arrival, document))
    owners = {item.workspace.id: item for item in items}
    ambiguous, found = 0, set[ObjectId]()
    for document in arrivals.chats_by_id(ctx.store.chats, list(by_chat)):
        chat_id = document.get("_id")
        if not isinstance(chat_id, ObjectId) or chat_id not in by_chat:
            continue
        found.add(chat_id)
        keys = by_chat[chat_id]
        owner = ownership.owner_of(document)
        if owner is None:
            ambiguous += len(keys)  # names no single workspace (an array, another type): mailed to nobody
            continue
        item = owners.get(owner)
        if item is None:
            continue  # a workspace this run does not export (inactive, no address, another worker's)
        mine = [arrival for arrival in keys if arrival >= item.start]
        if not mine:
            continue
        item.keys.extend(mine)
        if item.documents is not None and chat_id in over_budget:
            item.documents = None  # read by the delivery itself
        elif item.documents is not None:
            item.documents.extend(pair for pair in kept.get(chat_id, ()) if pair[0] >= item.start)
        item.chats.update(dict.fromkeys((chat_id, str(chat_id)), ownership.chat_of(document)))
        item.chat_ids.add(chat_id)
    orphans += sum(len(keys) for chat_id, keys in by_chat.items() if chat_id not in found)
    for item in items:
        if len(item.chat_ids) > 1:
            item.keys.sort()
    if ctx.request.counts_run_anomalies:
        plan.run_anomalies.update(+Counter({"orphaned_message": orphans, AMBIGUOUS_CHAT: ambiguous}))
