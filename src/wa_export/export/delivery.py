"""One workspace of a scheduled run: lease, parts, intent, email, cursor (docs/design.md).

Under the lease (kept alive by a heartbeat) the window [cursor, end) is cut
into parts of consecutive messages in arrival order; every part's workbook is
written (a part too big for EXPORT_MAX_ATTACHMENT_MB is cut smaller), then the
parts are sent in order. Before each email its intent is recorded (`in_flight`
on the state, a `sending` entry in export_logs); once SMTP accepted it the
entry turns `completed` and the cursor moves to the part's upper bound. An
intent found from an earlier run means that email may have gone out: it is
delivered again (never lost) and flagged `possible_duplicate`, in the email too.
"""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId
from pymongo.errors import ConnectionFailure, PyMongoError

from wa_export.export.context import RunContext
from wa_export.export.email_text import EmailFacts, compose_export_mail
from wa_export.export.files import describe_file_error, remove_files
from wa_export.export.heartbeat import LeaseKeeper
from wa_export.export.plan import CURSOR_AHEAD, WorkItem
from wa_export.export.results import WorkspaceResult
from wa_export.export.rows import RowStats
from wa_export.export.window import WorkspaceExport, Written, counts
from wa_export.mail.errors import MailError
from wa_export.store import arrivals, logs, ownership
from wa_export.store.arrivals import Key
from wa_export.store.state import KEEP_IN_FLIGHT, InFlight, Lease, LeaseLost, acquire_lease

LEASE_HELD = "another wa-export run holds this workspace's lease"


class ScheduledDelivery(WorkspaceExport):
    """The scheduled path under a lease."""

    def __init__(
        self, ctx: RunContext, item: WorkItem, result: WorkspaceResult, lease: Lease, keeper: LeaseKeeper
    ) -> None:
        super().__init__(ctx, item, result)
        self.lease = lease
        self.keeper = keeper
        self.released = False
        # What may already have been delivered (an earlier run's intent), trimmed as parts go out.
        self.unknown: InFlight | None = lease.state.in_flight

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
            lease.caught_up(ctx.end_key, release=True, force=window.cursor_ahead)
            self.released = True
            result.outcome = "no_messages"
            result.reason = "nothing new since the previous export"
            if earlier is not None:
                result.reason += "; the messages of an earlier email whose outcome was unknown are gone"
            return result

        refusal = ctx.refusal(self.item.recipients)
        if refusal is not None:
            # Refused before any work: the cursor stays, so the window goes out once it is fixed.
            # What it holds is known from its keys already: "not attempted" still says how many wait.
            result.message_count = sum(part.count for part in parts)
            return self.fail(refusal, window.low, in_flight=KEEP_IN_FLIGHT, pending=None)

        try:
            written = self.write_parts(window, parts, ctx.settings.max_attachment_bytes)
        except OSError as error:
            return self.fail(
                describe_file_error(error, ctx.settings.export_dir), window.low, in_flight=KEEP_IN_FLIGHT, pending=None
            )
        for piece in written:
            result.add_counts(piece.by_status, piece.anomalies)
            result.files.append(str(piece.path))
        if written:
            result.file_path = str(written[-1].path)
        # This attempt's workbooks supersede the undelivered ones of the last attempt.
        remove_files(lease.state.pending_files, keep=result.files)
        sendable = [piece for piece in written if not piece.too_big]
        blocked = written[-1] if written and written[-1].too_big else None
        result.parts = len(sendable)
        if not written:
            lease.caught_up(ctx.end_key, release=True, force=window.cursor_ahead)
            self.released = True
            result.outcome = "no_messages"
            result.reason = "the new messages were deleted before they could be exported"
            return result
        self.send_all(sendable, blocked)
        return result

    def send_all(self, sendable: list[Written], blocked: Written | None) -> None:
        ctx, lease, result = self.ctx, self.lease, self.result
        remaining = [str(piece.path) for piece in [*sendable, *([blocked] if blocked else [])]]
        total = len(sendable)
        for number, piece in enumerate(sendable, 1):
            if number > 1 and ctx.stop_requested.is_set():
                result.outcome = "completed"
                result.reason = (
                    f"stopped after part {number - 1} of {total} (asked to stop); the next run sends the rest"
                )
                return
            self.keeper.check("the email was sent (nothing was sent)")
            duplicate = self.unknown is not None and self.unknown.overlaps(piece.low, piece.high)
            log_id = ObjectId()
            intent = InFlight(
                log_id, ctx.run_id, piece.low, self._intent_end(piece.high), number, total, ctx.clock.now()
            )
            lease.set_in_flight(intent, remaining)
            self.log(
                piece.low,
                piece.high,
                status=logs.STATUS_SENDING,
                piece=piece,
                part=number,
                parts=total,
                log_id=log_id,
                possible_duplicate=duplicate,
            )
            facts = EmailFacts(
                arrivals.time_of(piece.low) or ctx.end_time,
                arrivals.time_of(piece.high) or ctx.end_time,
                piece.count,
                piece.by_status,
                piece.path,
                self.item.recipients.addresses,
                number,
                total,
                duplicate,
            )
            try:
                self.keeper.check("the email was sent (nothing was sent)")
                ctx.mail.send(compose_export_mail(ctx.settings, self.item.workspace, facts, ctx.run_time))
            except MailError as error:
                reason = ctx.redact(str(error))
                logs.mark_failed(
                    ctx.store.export_logs, log_id, reason, ctx.clock.now(), outcome_unknown=error.outcome_unknown
                )
                # The server may have it (mail/errors.py): the intent stays, so the next delivery is flagged.
                left = intent if error.outcome_unknown else self._unknown_after(piece.low)
                self._record_failure(reason, in_flight=left)
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
            self.result.outcome = "failed"
            reason = self._too_big(blocked)
            self.result.reason = reason
            self.log(blocked.low, blocked.high, status=logs.STATUS_FAILED, error=reason, piece=blocked)
            self.lease.failed(reason, in_flight=self.unknown, pending_files=[str(blocked.path)], release=True)
            self.released = True

    def _intent_end(self, high: Key) -> Key:
        """An intent also covers what an earlier, unknown one still covers beyond this part."""
        return self.unknown.reach(high) if self.unknown is not None else high

    def _unknown_after(self, key: Key) -> InFlight | None:
        """The earlier unknown range from `key` on, or None once it is passed."""
        return self.unknown.after(key) if self.unknown is not None else None

    def _too_big(self, piece: Written) -> str:
        ctx = self.ctx
        arrived = arrivals.time_of(piece.low)
        when = f" (arrived {arrived:%Y-%m-%d %H:%M:%S} UTC)" if arrived is not None else ""
        what = "a single message" if piece.count <= 1 else f"{piece.count} messages that arrived at the same moment"
        # One message can be passed alone (its _id); messages sharing one date key only together.
        message_id = self._only_message_id(piece) if piece.count <= 1 else None
        move = f"--move-past {message_id}" if message_id is not None else "--move-to"
        return (
            f"{what}{when} makes a workbook of {piece.encoded_size / 2**20:.2f} MB once encoded for "
            f"email, over EXPORT_MAX_ATTACHMENT_MB={ctx.settings.export_max_attachment_mb:g}; the file is kept at "
            f"{piece.path} and the cursor stays before it: raise EXPORT_MAX_ATTACHMENT_MB if the mail "
            f"server allows it, or move the cursor past it with `wa-export state {self.item.workspace.id} {move}`"
        )

    def _only_message_id(self, piece: Written) -> ObjectId | None:
        """The _id of the one message of a too-big part (a rare path: two queries)."""
        ctx = self.ctx
        chat_ids = sorted(ownership.chats_of_workspace(ctx.store.chats, self.item.workspace).owned)
        found = next(arrivals.window_messages(ctx.store.messages, ctx.key, chat_ids, piece.low, piece.high), None)
        message_id = found.get("_id") if found is not None else None
        return message_id if isinstance(message_id, ObjectId) else None

    def fail(self, reason: str, low: Key, *, in_flight: object, pending: list[str] | None) -> WorkspaceResult:
        """The workspace failed before any email: logged, counted on its state, the cursor unmoved."""
        self.result.outcome = "failed"
        self.result.reason = reason
        self.log(low, self.ctx.end_key, status=logs.STATUS_FAILED, error=reason)
        self._record_failure(reason, in_flight=in_flight, pending=pending)
        return self.result

    def _record_failure(self, reason: str, *, in_flight: object, pending: list[str] | None = None) -> None:
        self.result.outcome = "failed"
        self.result.reason = reason
        self.lease.failed(reason, in_flight=in_flight, pending_files=pending, release=True)
        self.released = True


def deliver(ctx: RunContext, item: WorkItem) -> WorkspaceResult:
    """The scheduled delivery of one workspace (or, with --dry-run / --no-email, a look at it)."""
    workspace = item.workspace
    result = WorkspaceResult(
        workspace.id,
        workspace.name,
        "skipped",
        recipients=item.recipients.addresses,
        recipients_source=item.recipients.source,
    )
    if ctx.request.dry_run or not ctx.request.send_email:
        return look_without_lease(ctx, item, result)
    lease = acquire_lease(
        ctx.store, workspace.id, ctx.run_id, timedelta(seconds=ctx.settings.lease_seconds), ctx.clock, item.first_cursor
    )
    if lease is None:
        result.reason = LEASE_HELD
        return result
    result.cursor_source = lease.new_cursor_source
    delivery: ScheduledDelivery | None = None
    lease_lost = False
    try:
        with LeaseKeeper(lease) as keeper:
            delivery = ScheduledDelivery(ctx, item, result, lease, keeper)
            return delivery.run()
    except ConnectionFailure:
        raise  # MongoDB is gone: the whole run stops (exit 3)
    except (PyMongoError, LeaseLost) as error:
        result.outcome = "failed"
        lease_lost = isinstance(error, LeaseLost)
        text = f"{error}; nothing more was sent" if isinstance(error, LeaseLost) else f"MongoDB error: {error}"
        result.reason = ctx.redact(text)
    except Exception as error:
        result.outcome = "failed"
        result.reason = result.unexpected_error(error, ctx.redact)
    finally:
        if delivery is None or not delivery.released:
            _release_quietly(lease)
    if result.reason is not None:
        _record_error_quietly(WorkspaceExport(ctx, item, result), lease, result.reason, count_failure=not lease_lost)
    return result


def _release_quietly(lease: Lease) -> None:
    try:
        lease.release()
    except PyMongoError:
        pass  # it expires by itself; a connection error surfaces elsewhere


def _record_error_quietly(exporter: WorkspaceExport, lease: Lease, reason: str, *, count_failure: bool) -> None:
    """A failure that escaped the steps above: logged (and counted, unless the lease was lost) if MongoDB takes it."""
    ctx = exporter.ctx
    try:
        low = lease.cursor if arrivals.is_key(lease.cursor) else ctx.end_key
        exporter.log(low, ctx.end_key, status=logs.STATUS_FAILED, error=reason)
        if count_failure:  # a lost lease is the new owner's to count, not ours
            lease.count_escaped_failure(reason)
    except PyMongoError as error:
        if isinstance(error, ConnectionFailure):
            raise


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
        result.outcome = "no_messages"
        result.reason = "nothing new since the previous export"
        return result
    refusal = ctx.refusal(item.recipients)
    if refusal is not None:
        result.outcome, result.reason = "failed", refusal
        result.message_count = sum(part.count for part in parts)
        return result
    result.parts = len(parts)
    if ctx.request.dry_run:
        for part in parts:
            stats = RowStats()
            for _ in exporter.rows(window, part.low, part.high, stats):
                pass
            result.add_counts(*counts(stats))
        result.outcome = "dry_run"
        return result
    try:
        written = exporter.write_parts(window, parts, None)
    except OSError as error:
        result.outcome = "failed"
        result.reason = describe_file_error(error, ctx.settings.export_dir)
        return result
    for piece in written:
        result.add_counts(piece.by_status, piece.anomalies)
        result.files.append(str(piece.path))
    result.file_path = result.files[-1] if result.files else None
    result.outcome = "written" if written else "no_messages"
    return result


__all__ = ["LEASE_HELD", "deliver", "look_without_lease"]
