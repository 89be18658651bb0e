"""One workspace of a scheduled run under its lease: parts, intent, email, cursor (docs/design.md, steps 6-9)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from typing import Self

from bson import ObjectId
from pymongo.errors import ConnectionFailure, PyMongoError

from wa_export.export.context import RunContext
from wa_export.export.email_text import compose_export_mail
from wa_export.export.plan import CURSOR_AHEAD, NOTHING_NEW, WorkItem, not_due_result
from wa_export.export.results import WorkspaceResult
from wa_export.export.rows import RowStats
from wa_export.export.window import WorkspaceExport, Written, describe_file_error, remove_files
from wa_export.mail.errors import MailError
from wa_export.schedule import decide
from wa_export.store import arrivals, logs, ownership
from wa_export.store.arrivals import Key
from wa_export.store.state import KEEP_IN_FLIGHT, InFlight, Lease, LeaseLost, acquire_lease
from wa_export.timers import Timer, TimerThread
from wa_export.units import count_noun
from wa_export.workbook.fingerprint import fingerprint

LEASE_HELD = "another wa-export run holds this workspace's lease"
# One thread renews every lease of the process; a renewal can wait on MongoDB, so never on the SMTP deadlines' thread.
_RENEWALS = TimerThread("lease-renewals")


class LeaseKeeper:
    """Renews the lease while the work takes; once it is lost nothing more is sent and no cursor moves."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.interval = max(lease.duration.total_seconds() / 3, 0.5)
        self._lost = threading.Event()
        self._timer: Timer | None = None

    def __enter__(self) -> Self:
        first = time.monotonic() + self.interval
        self._timer = _RENEWALS.add(Timer(lambda: first, self._renew))
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._timer is not None:
            _RENEWALS.remove(self._timer)  # waits for a renewal in progress
            self._timer = None

    def check(self) -> None:
        if self._lost.is_set():
            raise LeaseLost(
                f"the lease on workspace {self.lease.workspace_id} expired and was taken by another run "
                "before the email was sent (nothing was sent)"
            )

    def _renew(self) -> float | None:
        """One renewal; the next one's time, or None once the lease is lost."""
        try:
            self.lease.renew()
        except LeaseLost:
            self._lost.set()
            return None
        except PyMongoError:
            # MongoDB did not answer: the lease still runs on the expiry written last.
            if self.lease.clock.now() >= self.lease.expires_at:
                self._lost.set()
                return None
        return time.monotonic() + self.interval


@dataclass
class ScheduledDelivery(WorkspaceExport):
    """The scheduled path under a lease."""

    lease: Lease
    keeper: LeaseKeeper
    released: bool = False
    # What may already have been delivered (an earlier run's intent), trimmed as parts go out.
    unknown: InFlight | None = None

    def run(self) -> WorkspaceResult:
        ctx, lease, result = self.ctx, self.lease, self.result
        earlier = self.unknown
        if earlier is not None and earlier.log_id is not None and earlier.run_id != ctx.run_id:
            logs.close_unknown_outcome(ctx.store.export_logs, earlier.log_id, ctx.run_id, ctx.clock.now())
        window = self.window(lease.cursor)
        result.window_start, result.window_end = arrivals.time_of(window.low), ctx.end_time
        if window.cursor_ahead:
            result.anomalies[CURSOR_AHEAD] = 1
        parts = self.parts(window)
        if not parts:
            gone = "; the messages of an earlier email whose outcome was unknown are gone"
            return self._caught_up(NOTHING_NEW + (gone if earlier is not None else ""), window.cursor_ahead)
        refusal = ctx.refusal(self.item.recipients, self.item.workspace)
        if refusal is not None:
            # The cursor stays, so the window goes out once it is fixed; "not attempted" still says how many wait.
            result.message_count = sum(part.count for part in parts)
            return self._fail(refusal, window.low)
        try:
            written = self.write_parts(window, parts, ctx.settings.max_attachment_bytes)
        except OSError as error:
            return self._fail(describe_file_error(error, ctx.settings.export_dir), window.low)
        self.add_written(written)
        remove_files(lease.state.pending_files, keep=result.files)  # superseded by this attempt's workbooks
        if not written:
            return self._caught_up("the new messages were deleted before they could be exported", window.cursor_ahead)
        blocked = written.pop() if written[-1].too_big else None
        result.parts = len(written)
        self._send_all(written, blocked)
        return result

    def _send_all(self, sendable: list[Written], blocked: Written | None) -> None:
        ctx, lease, result = self.ctx, self.lease, self.result
        remaining = [str(piece.path) for piece in [*sendable, blocked] if piece is not None]
        total = len(sendable)
        for number, piece in enumerate(sendable, 1):
            if number > 1 and ctx.stop_requested.is_set():
                result.reason = (
                    f"stopped after part {number - 1} of {total} (asked to stop); the next run sends the rest"
                )
                return
            self.keeper.check()
            duplicate = self.unknown is not None and self.unknown.overlaps(piece.low, piece.high)
            attachment = fingerprint(piece.path)  # before the intent: an unreadable file sends nothing
            log_id = ObjectId()
            # An intent also covers what an earlier, unknown one still covers beyond this part.
            end = self.unknown.reach(piece.high) if self.unknown is not None else piece.high
            intent = InFlight(log_id, ctx.run_id, piece.low, end, number, total, ctx.clock.now())
            lease.set_in_flight(intent, remaining)
            details = {"part": number, "parts": total, "log_id": log_id, "possible_duplicate": duplicate}
            details["attachment"] = attachment  # the ledger: what this email carries
            self.log(piece.low, piece.high, logs.STATUS_SENDING, piece, **details)
            window = (arrivals.time_of(piece.low) or ctx.end_time, arrivals.time_of(piece.high) or ctx.end_time)
            try:
                self.keeper.check()
                mail = compose_export_mail(
                    ctx.settings,
                    self.item.workspace,
                    ctx.run_time,
                    window,
                    piece.by_status,
                    piece.path,
                    self.item.recipients.addresses,
                    (number, total),
                    duplicate,
                    protected=ctx.workbook_password(self.item.workspace) is not None,
                )
                ctx.mail.send(mail)
            except MailError as error:
                reason = ctx.redact(str(error))
                logs.mark_failed(
                    ctx.store.export_logs, log_id, reason, ctx.clock.now(), outcome_unknown=error.outcome_unknown
                )
                # The server may have it (mail/errors.py): the intent stays, so the next delivery is flagged.
                self._record_failure(reason, intent if error.outcome_unknown else self._unknown_after(piece.low))
                return
            logs.mark_completed(ctx.store.export_logs, log_id, ctx.clock.now())
            remaining.remove(str(piece.path))
            result.emails_sent += 1
            result.possible_duplicate = result.possible_duplicate or duplicate
            self.unknown = self._unknown_after(piece.high)
            last = number == total and blocked is None
            lease.delivered(
                piece.high, str(piece.path), possible_duplicate=duplicate, in_flight=self.unknown, release=last
            )
            self.released = last
            result.outcome = "completed"
        if blocked is not None:
            reason = self._too_big(blocked)
            self.log(blocked.low, blocked.high, logs.STATUS_FAILED, blocked, error=reason)
            self._record_failure(reason, self.unknown, [str(blocked.path)])

    def _unknown_after(self, key: Key) -> InFlight | None:
        """The earlier unknown range from `key` on, or None once it is passed."""
        return self.unknown.after(key) if self.unknown is not None else None

    def _too_big(self, piece: Written) -> str:
        arrived = arrivals.time_of(piece.low)
        when = f" (arrived {arrived:%Y-%m-%d %H:%M:%S} UTC)" if arrived is not None else ""
        count = piece.message_count
        what = "a single message" if count <= 1 else f"{count_noun(count, 'message')} that arrived at the same moment"
        # One message can be passed alone (its _id; a rare path: two queries); messages sharing a date key only together.
        message_id = None
        if count <= 1:
            ctx = self.ctx
            chat_ids = sorted(ownership.chats_of_workspace(ctx.store.chats, self.item.workspace).owned)
            found = next(arrivals.window_messages(ctx.store.messages, ctx.key, chat_ids, piece.low, piece.high), None)
            message_id = found.get("_id") if found is not None else None
        move = f"--move-past {message_id}" if isinstance(message_id, ObjectId) else "--move-to"
        return (
            f"{what}{when} makes a workbook of {piece.encoded_size / 2**20:.2f} MB once encoded for "
            f"email, over EXPORT_MAX_ATTACHMENT_MB={self.ctx.settings.export_max_attachment_mb:g}; the file is kept at "
            f"{piece.path} and the cursor stays before it: raise EXPORT_MAX_ATTACHMENT_MB if the mail "
            f"server allows it, or move the cursor past it with `wa-export state {self.item.workspace.id} {move}`"
        )

    def _caught_up(self, reason: str, cursor_ahead: bool) -> WorkspaceResult:
        self.lease.caught_up(self.ctx.end_key, release=True, force=cursor_ahead)
        self.released = True
        self.result.outcome, self.result.reason = "no_messages", reason
        return self.result

    def _fail(self, reason: str, low: Key) -> WorkspaceResult:
        """Failed before any email: logged, counted on its state, the cursor and any intent unmoved."""
        self.log(low, self.ctx.end_key, logs.STATUS_FAILED, error=reason)
        self._record_failure(reason, KEEP_IN_FLIGHT, None)
        return self.result

    def _record_failure(self, reason: str, in_flight: object, pending: list[str] | None = None) -> None:
        self.result.outcome, self.result.reason = "failed", reason
        self.lease.failed(reason, in_flight=in_flight, pending_files=pending, release=True)
        self.released = True


def deliver(ctx: RunContext, item: WorkItem) -> WorkspaceResult:
    """The scheduled delivery of one workspace (or, with --dry-run / --no-email, a look at it)."""
    if item.zone is not None:
        ctx = ctx.in_zone(item.zone)
    result = WorkspaceResult.of(item.workspace, "skipped", item.recipients)
    if ctx.request.dry_run or not ctx.request.send_email:
        return look_without_lease(ctx, item, result)
    lease = acquire_lease(
        ctx.store,
        item.workspace.id,
        ctx.run_id,
        timedelta(seconds=ctx.settings.lease_seconds),
        ctx.clock,
        item.first_cursor,
    )
    if lease is None:
        result.reason = LEASE_HELD
        return result
    if item.serves is not None:
        # Due by the run's first read; another run may have served the slot since: decided again on the lease's document.
        decision = decide(item.schedule, ctx.settings.export_timezone, ctx.run_time, lease.state.served)
        if not decision.due:
            lease.release()
            return not_due_result(ctx, item.workspace, item.recipients, item.schedule, decision)
        lease.serves = item.serves
    result.cursor_source = lease.new_cursor_source
    delivery: ScheduledDelivery | None = None
    count_failure = True  # a lost lease is the new owner's to count
    try:
        with LeaseKeeper(lease) as keeper:
            delivery = ScheduledDelivery(ctx, item, result, lease, keeper, unknown=lease.state.in_flight)
            return delivery.run()
    except ConnectionFailure:
        raise  # MongoDB is gone: the whole run stops (exit 3)
    except LeaseLost as error:
        count_failure = False
        reason = ctx.redact(f"{error}; nothing more was sent")
    except PyMongoError as error:
        reason = ctx.redact(f"MongoDB error: {error}")
    except Exception as error:
        reason = result.unexpected_error(error, ctx.redact)
    finally:
        if delivery is None or not delivery.released:
            try:
                lease.release()
            except PyMongoError:
                pass  # it expires by itself; a connection error surfaces elsewhere
    result.outcome, result.reason = "failed", reason
    try:  # logged and counted if MongoDB takes it
        low = lease.cursor if arrivals.is_key(lease.cursor) else ctx.end_key
        WorkspaceExport(ctx, item, result).log(low, ctx.end_key, logs.STATUS_FAILED, error=reason)
        if count_failure:
            lease.count_escaped_failure(reason)
    except PyMongoError as error:
        if isinstance(error, ConnectionFailure):
            raise
    return result


def look_without_lease(ctx: RunContext, item: WorkItem, result: WorkspaceResult) -> WorkspaceResult:
    """--dry-run counts what a scheduled run would send; --no-email writes the workbooks. Neither writes state.

    A dry run decides as the delivery does (a lease held, no messages, a refusal) and stops before writing.
    """
    if ctx.request.dry_run and item.state.leased_by_other(ctx.clock.now(), ctx.run_id):
        result.reason = LEASE_HELD
        return result
    exporter = WorkspaceExport(ctx, item, result)
    window = exporter.window(item.state.cursor if item.state.has_cursor else None)
    result.window_start, result.window_end = arrivals.time_of(window.low), ctx.end_time
    parts = exporter.parts(window)
    if not parts:
        result.outcome, result.reason = "no_messages", NOTHING_NEW
        return result
    refusal = ctx.refusal(item.recipients, item.workspace)
    if refusal is not None:
        result.outcome, result.reason = "failed", refusal
        result.message_count = sum(part.count for part in parts)
        return result
    result.parts = len(parts)
    if ctx.request.dry_run:
        for part in parts:
            stats = RowStats()
            deque(exporter.rows(window, part.low, part.high, stats), maxlen=0)  # counts the rows, writes none
            result.add_counts(*stats.counts())
        result.outcome = "dry_run"
        return result
    try:
        written = exporter.write_parts(window, parts, None)
    except OSError as error:
        result.outcome, result.reason = "failed", describe_file_error(error, ctx.settings.export_dir)
        return result
    exporter.add_written(written)
    result.outcome = "written" if written else "no_messages"
    return result
