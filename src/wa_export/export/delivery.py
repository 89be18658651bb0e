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

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.errors import ConnectionFailure, PyMongoError

from wa_export.addresses import outside_allowed_domains
from wa_export.export.context import RunContext, outcome_unknown
from wa_export.export.email_text import EmailFacts, compose_export_mail
from wa_export.export.files import describe_file_error, remove_files, write_workbook
from wa_export.export.heartbeat import LeaseKeeper
from wa_export.export.parts import Part, cut_parts, rows_that_fit
from wa_export.export.plan import CURSOR_AHEAD, WorkItem
from wa_export.export.results import WorkspaceResult
from wa_export.export.rows import RowStats, message_rows
from wa_export.export.status import STATUSES
from wa_export.mail.transport import MailError, encoded_attachment_size
from wa_export.store import arrivals, export_logs
from wa_export.store.arrivals import Key
from wa_export.store.connection import Chat
from wa_export.store.export_state import (
    CLOCK_TOLERANCE,
    KEEP_IN_FLIGHT,
    InFlight,
    Lease,
    LeaseLost,
    acquire_lease,
)

LEASE_HELD = "another wa-export run holds this workspace's lease"


@dataclass
class Written:
    """One part's workbook on disk."""

    low: Key
    high: Key
    path: Path
    by_status: dict[str, int]
    anomalies: dict[str, int]
    encoded_size: int
    too_big: bool = False

    @property
    def count(self) -> int:
        return sum(self.by_status.values())


def counts(stats: RowStats) -> tuple[dict[str, int], dict[str, int]]:
    """Per-status counts with every known status present, and the anomalies, as plain dicts."""
    by_status = {status: stats.by_status.get(status, 0) for status in STATUSES}
    for status, count in stats.by_status.items():
        if status not in STATUSES:
            by_status[status] = count
    return by_status, dict(stats.anomalies)


@dataclass
class Window:
    """A workspace's [low, end) with how to read its keys and messages."""

    low: Key
    chats: dict[object, Chat]
    chat_ids: list[ObjectId]
    keys: list[Key] | None  # in memory (from the pass), or None: read on demand
    cursor_ahead: bool = False
    found_chats: set[ObjectId] = field(default_factory=set)


class WorkspaceExport:
    """Reading and writing one workspace's window; shared by deliveries, --no-email and --dry-run."""

    def __init__(self, ctx: RunContext, item: WorkItem, result: WorkspaceResult) -> None:
        self.ctx = ctx
        self.item = item
        self.result = result

    # --- the window ------------------------------------------------------------------

    def window(self, cursor: object) -> Window:
        """The window from `cursor`: the pass's keys when they cover it, else the workspace's own path."""
        ctx, item, key = self.ctx, self.item, self.ctx.key
        low: Key
        ahead = False
        if cursor is None:
            low = item.start
        elif not key.usable(cursor):
            moment = key.time_of(cursor)
            low = key.at(moment) if moment is not None else ctx.end_key
        else:
            low = cursor  # type: ignore[assignment]
        # Another run that started after this one may have moved the cursor to its own
        # end: "ahead" is measured against the database's time now, not at our start.
        if low > key.at(ctx.clock.now() + CLOCK_TOLERANCE):  # type: ignore[operator]
            low, ahead = ctx.end_key, True
        if item.current and low >= item.start:  # type: ignore[operator]
            keys = [arrival for arrival in item.keys if arrival >= low]  # type: ignore[operator]
            return Window(low, item.chats, sorted(item.chat_ids), keys, ahead)
        # Lagging, or the cursor was moved back since the pass: this workspace's chats, on their index.
        chats = arrivals.chats_of_workspace(ctx.store.chats, item.workspace)
        by_form: dict[object, Chat] = {}
        for chat_id, chat in chats.items():
            by_form[chat_id] = chat
            by_form[str(chat_id)] = chat
        return Window(low, by_form, sorted(chats), None, ahead)

    def keys_between(self, window: Window, low: Key, high: Key) -> Iterator[Key]:
        if window.keys is not None:
            return (arrival for arrival in window.keys if low <= arrival < high)  # type: ignore[operator]
        return self._read_keys(window, low, high)

    def _read_keys(self, window: Window, low: Key, high: Key) -> Iterator[Key]:
        for arrival, raw_chat_id in arrivals.keys_of_chats(
            self.ctx.store.messages, self.ctx.key, window.chat_ids, low, high
        ):
            chat_id = arrivals.as_object_id(raw_chat_id)
            if chat_id is not None:
                window.found_chats.add(chat_id)
            yield arrival

    def parts(self, window: Window) -> list[Part]:
        parts = cut_parts(self.keys_between(window, window.low, self.ctx.end_key), window.low, self.ctx.end_key,
                          self.ctx.settings.export_max_rows_per_email)
        if window.keys is None:
            # Only the chats that have messages in the window go into the message queries.
            window.chat_ids = sorted(window.found_chats)
        return parts

    def rows(self, window: Window, low: Key, high: Key, stats: RowStats) -> Iterator[Any]:
        messages = arrivals.window_messages(self.ctx.store.messages, self.ctx.key, window.chat_ids, low, high)
        return message_rows(messages, window.chats, self.item.workspace.id, stats)

    # --- workbooks ---------------------------------------------------------------------

    def write_parts(self, window: Window, parts: Iterable[Part], size_limit: int | None) -> list[Written]:
        """Every part's workbook, in order; a part over `size_limit` is rewritten as smaller parts.

        A single message too big for the limit ends the list (`too_big`): nothing after
        it can be delivered before it. On a write error the files written so far are
        removed and the error raised.
        """
        ctx = self.ctx
        queue = deque(parts)
        written: list[Written] = []
        carried_low: Key | None = None  # an empty part's range goes to its neighbour
        try:
            while queue:
                part = queue.popleft()
                low = carried_low if carried_low is not None else part.low
                stats = RowStats()
                path = write_workbook(ctx.settings, self.item.workspace, self.rows(window, low, part.high, stats),
                                      ctx.run_time)
                if path is None:  # its messages are gone (deleted meanwhile)
                    if written:
                        written[-1].high = part.high
                    else:
                        carried_low = low
                    continue
                carried_low = None
                by_status, anomalies = counts(stats)
                size = encoded_attachment_size(path.stat().st_size)
                piece = Written(low, part.high, path, by_status, anomalies, size)
                if size_limit is not None and size > size_limit:
                    if stats.total <= 1:
                        piece.too_big = True
                        written.append(piece)
                        break
                    remove_files([path])
                    smaller = cut_parts(self.keys_between(window, low, part.high), low, part.high,
                                        rows_that_fit(stats.total, size, size_limit))
                    queue.extendleft(reversed(smaller))
                    continue
                written.append(piece)
        except BaseException:
            remove_files([piece.path for piece in written])
            raise
        return written

    def entry(
        self,
        low: Key,
        high: Key,
        *,
        status: str,
        error: str | None = None,
        piece: Written | None = None,
        part: int | None = None,
        parts: int | None = None,
        log_id: ObjectId | None = None,
        possible_duplicate: bool = False,
    ) -> dict[str, Any]:
        """An export_logs document: every field of the original schema, then ours."""
        ctx, key = self.ctx, self.ctx.key
        now = ctx.clock.now()
        document: dict[str, Any] = {} if log_id is None else {"_id": log_id}
        document.update(
            workspace_id=self.item.workspace.id,
            workspace_name=self.item.workspace.name,
            export_type=export_logs.EXPORT_TYPE,
            export_timestamp=ctx.run_time,
            message_count=piece.count if piece is not None else self.result.message_count,
            file_path=str(piece.path) if piece is not None else None,
            email_sent_to=", ".join(self.item.recipients),
            status=status,
            error_message=error,
            created_at=now,
            updated_at=now,
            window_start=key.time_of(low),
            window_end=key.time_of(high),
            window_start_key=low,
            window_end_key=high,
            part=part,
            parts=parts,
            trigger=ctx.request.trigger,
            run_id=ctx.run_id,
            by_status=piece.by_status if piece is not None else self.result.by_status,
            anomalies=piece.anomalies if piece is not None else self.result.anomalies,
            possible_duplicate=possible_duplicate,
        )
        return document


class ScheduledDelivery(WorkspaceExport):
    """The scheduled path under a lease."""

    def __init__(self, ctx: RunContext, item: WorkItem, result: WorkspaceResult, lease: Lease,
                 keeper: LeaseKeeper) -> None:
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
            export_logs.close_unknown_outcome(ctx.store.export_logs, earlier.log_id, ctx.run_id, ctx.clock.now())
        window = self.window(lease.cursor)
        result.window_start, result.window_end = ctx.key.time_of(window.low), ctx.end_time
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

        refusal = self.refusal()
        if refusal is not None:
            # Refused before any work: the cursor stays, so the window goes out once it is fixed.
            return self.fail(refusal, window.low, in_flight=KEEP_IN_FLIGHT, pending=None)

        try:
            written = self.write_parts(window, parts, ctx.settings.max_attachment_bytes)
        except OSError as error:
            return self.fail(describe_file_error(error, ctx.settings.export_dir), window.low, in_flight=KEEP_IN_FLIGHT,
                             pending=None)
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

    def refusal(self) -> str | None:
        """Why this workspace's email cannot go out in this run, known before exporting."""
        ctx, workspace = self.ctx, self.item.workspace
        refused = outside_allowed_domains(self.item.recipients, ctx.settings.export_allowed_email_domains)
        if refused:
            return (
                f"recipient(s) {', '.join(refused)} are outside EXPORT_ALLOWED_EMAIL_DOMAINS "
                f"({', '.join(ctx.settings.export_allowed_email_domains)}); fix WORKSPACE_{workspace.id}_EMAIL"
            )
        if ctx.mail.fatal_error is not None:
            return f"not attempted: an earlier email of this run failed the same way ({ctx.mail.fatal_error})"
        return None

    def send_all(self, sendable: list[Written], blocked: Written | None) -> None:
        ctx, lease, result = self.ctx, self.lease, self.result
        remaining = [str(piece.path) for piece in [*sendable, *([blocked] if blocked else [])]]
        total = len(sendable)
        for number, piece in enumerate(sendable, 1):
            if number > 1 and ctx.stop_requested.is_set():
                result.outcome = "completed"
                result.reason = (f"stopped after part {number - 1} of {total} (asked to stop); "
                                 "the next run sends the rest")
                return
            self.keeper.check("the email was sent (nothing was sent)")
            duplicate = self.unknown is not None and self.unknown.overlaps(piece.low, piece.high)
            log_id = ObjectId()
            intent = InFlight(log_id, ctx.run_id, piece.low, self._intent_end(piece.high), number, total,
                              ctx.clock.now())
            lease.set_in_flight(intent, remaining)
            export_logs.insert_entry(ctx.store.export_logs, self.entry(
                piece.low, piece.high, status=export_logs.STATUS_SENDING, piece=piece, part=number, parts=total,
                log_id=log_id, possible_duplicate=duplicate))
            facts = EmailFacts(ctx.key.time_of(piece.low) or ctx.end_time, ctx.key.time_of(piece.high) or ctx.end_time,
                               piece.count, piece.by_status, piece.path, self.item.recipients, number, total, duplicate)
            try:
                self.keeper.check("the email was sent (nothing was sent)")
                ctx.mail.send(compose_export_mail(ctx.settings, self.item.workspace, facts, ctx.run_time))
            except MailError as error:
                reason = ctx.redact(str(error))
                export_logs.mark_failed(ctx.store.export_logs, log_id, reason, ctx.clock.now())
                # Lost during DATA: it may have arrived, so the intent stays for the next run to flag.
                left = intent if outcome_unknown(error) else self._unknown_after(piece.low)
                self._record_failure(reason, in_flight=left)
                return
            export_logs.mark_completed(ctx.store.export_logs, log_id, ctx.clock.now())
            remaining.remove(str(piece.path))
            result.emails_sent += 1
            result.possible_duplicate = result.possible_duplicate or duplicate
            self.unknown = self._unknown_after(piece.high)
            last = number == total and blocked is None
            lease.delivered(piece.high, str(piece.path), possible_duplicate=duplicate,
                            in_flight=self.unknown, release=last)
            self.released = last
            result.outcome = "completed"
        if blocked is not None:
            self.result.outcome = "failed"
            reason = self._too_big(blocked)
            self.result.reason = reason
            export_logs.insert_entry(ctx.store.export_logs, self.entry(
                blocked.low, blocked.high, status=export_logs.STATUS_FAILED, error=reason, piece=blocked))
            self.lease.failed(reason, in_flight=self.unknown, pending_files=[str(blocked.path)], release=True)
            self.released = True

    def _intent_end(self, high: Key) -> Key:
        """An intent also covers what an earlier, unknown one still covers beyond this part."""
        unknown = self.unknown
        if unknown is not None:
            try:
                if unknown.to_key > high:  # type: ignore[operator]
                    return unknown.to_key  # type: ignore[return-value]
            except TypeError:
                pass
        return high

    def _unknown_after(self, key: Key) -> InFlight | None:
        """The earlier unknown range from `key` on, or None once it is passed."""
        unknown = self.unknown
        if unknown is None:
            return None
        try:
            if not unknown.to_key > key:  # type: ignore[operator]
                return None
            start = max(key, unknown.from_key)  # type: ignore[operator]
        except TypeError:
            return unknown
        return InFlight(None, unknown.run_id, start, unknown.to_key, unknown.part, unknown.parts, unknown.started_at,
                        unknown.note)

    def _too_big(self, piece: Written) -> str:
        ctx = self.ctx
        arrived = ctx.key.time_of(piece.low)
        when = f" (arrived {arrived:%Y-%m-%d %H:%M:%S} UTC)" if arrived is not None else ""
        return (
            f"a single message{when} makes a workbook of {piece.encoded_size / 2**20:.2f} MB once encoded for "
            f"email, over EXPORT_MAX_ATTACHMENT_MB={ctx.settings.export_max_attachment_mb:g}; the file is kept at "
            f"{piece.path} and the cursor stays before the message: raise EXPORT_MAX_ATTACHMENT_MB if the mail "
            f"server allows it, or move the cursor past it with `wa-export state {self.item.workspace.id} --move-to`"
        )

    def fail(self, reason: str, low: Key, *, in_flight: object, pending: list[str] | None) -> WorkspaceResult:
        """The workspace failed before any email: logged, counted on its state, the cursor unmoved."""
        self.result.outcome = "failed"
        self.result.reason = reason
        export_logs.insert_entry(self.ctx.store.export_logs, self.entry(
            low, self.ctx.end_key, status=export_logs.STATUS_FAILED, error=reason))
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
    result = WorkspaceResult(workspace.id, workspace.name, "skipped", recipients=item.recipients)
    if ctx.request.dry_run or not ctx.request.send_email:
        return look_without_lease(ctx, item, result)
    lease = acquire_lease(ctx.store.export_state, workspace.id, ctx.run_id,
                          timedelta(seconds=ctx.settings.lease_seconds), ctx.clock, item.first_cursor)
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
    except Exception as error:  # one broken workspace must not stop the others
        result.outcome = "failed"
        result.reason = ctx.redact(f"internal error ({type(error).__name__}: {error})")
    finally:
        if delivery is None or not delivery.released:
            _release_quietly(lease)
    if result.reason is not None:
        _record_error_quietly(WorkspaceExport(ctx, item, result), lease, result, count_failure=not lease_lost)
    return result


def _release_quietly(lease: Lease) -> None:
    try:
        lease.release()
    except PyMongoError:
        pass  # it expires by itself; a connection error surfaces elsewhere


def _record_error_quietly(
    exporter: WorkspaceExport, lease: Lease, result: WorkspaceResult, *, count_failure: bool
) -> None:
    """A failure that escaped the steps above: logged (and counted, unless the lease was lost) if MongoDB takes it."""
    ctx = exporter.ctx
    try:
        low = lease.cursor if lease.cursor is not None else ctx.end_key
        export_logs.insert_entry(ctx.store.export_logs, exporter.entry(
            low, ctx.end_key, status=export_logs.STATUS_FAILED, error=result.reason))  # type: ignore[arg-type]
        if count_failure:  # a lost lease is the new owner's to count, not ours
            ctx.store.export_state.update_one(
                {"_id": lease.workspace_id},
                {"$inc": {"consecutive_failures": 1},
                 "$set": {"last_error": result.reason, "last_attempt_at": ctx.clock.now()}},
            )
    except PyMongoError as error:
        if isinstance(error, ConnectionFailure):
            raise


def look_without_lease(ctx: RunContext, item: WorkItem, result: WorkspaceResult) -> WorkspaceResult:
    """--dry-run counts what a scheduled run would send; --no-email writes the workbooks. Neither writes state."""
    exporter = WorkspaceExport(ctx, item, result)
    window = exporter.window(item.state.cursor if item.state.has_cursor else None)
    result.window_start, result.window_end = ctx.key.time_of(window.low), ctx.end_time
    parts = exporter.parts(window)
    if not parts:
        result.outcome = "no_messages"
        result.reason = "nothing new since the previous export"
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
