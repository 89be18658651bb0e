"""One workspace of a scheduled run: its window cut into parts [low, high) (one email each), and under its lease
each part's intent, email and cursor move to `high` (docs/design.md, steps 6-9). Why this module is long: reading,
cutting, writing and delivering a window are one sequence over one state."""

from __future__ import annotations

import errno
import itertools
import threading
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.errors import ConnectionFailure, PyMongoError

from wa_export.clock import Timer, TimerThread
from wa_export.export.email_text import compose_export_mail
from wa_export.export.plan import AMBIGUOUS_CHAT, CURSOR_AHEAD, NOTHING_NEW, WorkItem, not_due_result
from wa_export.export.results import RunContext, WorkspaceResult
from wa_export.export.rows import Row, RowStats, message_rows
from wa_export.mail.errors import MailError
from wa_export.mail.message import encoded_attachment_size
from wa_export.settings import Settings
from wa_export.store import arrivals, logs, ownership
from wa_export.store.arrivals import Key
from wa_export.store.connection import Chat, Workspace
from wa_export.store.state import KEEP_IN_FLIGHT, InFlight, Lease, LeaseLost, acquire_lease
from wa_export.units import count_noun
from wa_export.workbook.fingerprint import Fingerprint, fingerprint
from wa_export.workbook.naming import publish_path_candidates, slugify, workspace_folder
from wa_export.workbook.publish import unlink_quietly
from wa_export.workbook.writer import WorkbookWriter
from wa_export.workspace_settings import decide

LEASE_HELD = "another wa-export run holds this workspace's lease"
SIZE_SAFETY = 0.9  # a too-big part is cut to this share of the rows that would just fit: one rewrite nearly always
# One thread renews every lease of the process; a renewal can wait on MongoDB, so never on the SMTP deadlines' thread.
_RENEWALS = TimerThread("lease-renewals")


@dataclass(frozen=True)
class Part:
    low: Key  # inclusive
    high: Key  # exclusive
    count: int  # messages in it when the keys were read


def cut_parts(keys: Iterable[Key], low: Key, high: Key, max_rows: int) -> list[Part]:
    """Parts of at most `max_rows` messages from ascending `keys`; messages sharing a key stay in one part."""
    parts: list[Part] = []
    count, start, previous = 0, low, None
    for key in keys:
        if count >= max_rows and key != previous:
            parts.append(Part(start, key, count))
            start, count = key, 0
        count += 1
        previous = key
    return [*parts, Part(start, high, count)] if count else parts


@dataclass
class Written:  # one part's workbook on disk
    low: Key
    high: Key
    path: Path
    by_status: dict[str, int]
    anomalies: dict[str, int]
    encoded_size: int
    too_big: bool = False

    @property
    def message_count(self) -> int:
        return sum(self.by_status.values())


@dataclass
class WorkspaceExport:
    """One workspace's window [low, end) under its lease, or (lease None) looked at by --no-email and --dry-run."""

    ctx: RunContext
    item: WorkItem
    result: WorkspaceResult
    lease: Lease | None = None
    # What may already have been delivered (an earlier run's intent), trimmed as parts go out.
    unknown: InFlight | None = None
    released: bool = False
    lost: threading.Event = field(default_factory=threading.Event)  # the lease: nothing more is sent, no cursor moves
    low: Key = field(init=False)
    cursor_ahead: bool = field(init=False)
    chats: dict[object, Chat] = field(init=False)
    chat_ids: list[ObjectId] = field(init=False)
    keys: list[Key] | None = field(init=False)
    documents: list[tuple[Key, dict[str, Any]]] | None = field(init=False)
    found_chats: set[ObjectId] = field(init=False, default_factory=set)

    def open_window(self, cursor: object) -> list[Part]:
        """The window from `cursor` (None: the plan's start), cut into parts."""
        ctx, item, end = self.ctx, self.item, self.ctx.end_key
        # A cursor of another EXPORT_ARRIVAL_FIELD (written since the plan) raises: the delivery fails, nothing moves.
        low, self.cursor_ahead = (item.start, False) if cursor is None else ctx.start_at(item.workspace.id, cursor)
        self.low = low
        if item.current and low >= item.start:
            self.keys = [arrival for arrival in item.keys if arrival >= low]
            self.documents = None if item.documents is None else [pair for pair in item.documents if pair[0] >= low]
            self.chats, self.chat_ids = item.chats, sorted(item.chat_ids)
        else:
            chats = ownership.chats_of_workspace(ctx.store.chats, item.workspace)
            # Messages of chats naming this workspace among others go to nobody: counted here before where the
            # pass counted them (it has the rest), so once and only for a workspace such a chat names.
            counted_from = item.ambiguous_counted_from
            high = end if counted_from is None else min(counted_from, end)
            if chats.shared and low < high:
                found = arrivals.count_of_chats(ctx.store.messages, ctx.key, chats.shared, low, high)
                if found:
                    self.result.anomalies[AMBIGUOUS_CHAT] = found
            self.chats, self.chat_ids = ownership.by_both_forms(chats.owned), sorted(chats.owned)
            self.keys = self.documents = None
        self.result.window_start, self.result.window_end = arrivals.time_of(low), ctx.end_time
        parts = cut_parts(self.keys_between(low, end), low, end, ctx.settings.export_max_rows_per_email)
        if self.keys is None:
            self.chat_ids = sorted(self.found_chats)  # only chats with messages in the window are queried
        return parts

    def keys_between(self, low: Key, high: Key) -> Iterator[Key]:
        if self.keys is not None:
            yield from (arrival for arrival in self.keys if low <= arrival < high)
            return
        ctx = self.ctx
        for arrival, raw_chat_id in arrivals.keys_of_chats(ctx.store.messages, ctx.key, self.chat_ids, low, high):
            chat_id = ownership.chat_of_message(raw_chat_id)
            if chat_id is not None:
                self.found_chats.add(chat_id)
            yield arrival

    def rows(self, low: Key, high: Key, stats: RowStats) -> Iterator[Row]:
        messages: Iterable[dict[str, Any]]
        if self.documents is not None:  # the pass kept them: no query
            messages = arrivals.in_row_order(document for key, document in self.documents if low <= key < high)
        else:
            messages = arrivals.window_messages(self.ctx.store.messages, self.ctx.key, self.chat_ids, low, high)
        return message_rows(messages, self.chats, self.item.workspace.id, stats)

    def write_parts(self, parts: Iterable[Part], size_limit: int | None) -> list[Written]:
        """Every part's workbook, in order; a part over `size_limit` is rewritten as smaller parts, and one no boundary
        can split ends the list (`too_big`): nothing after it goes before it. A write error removes them all."""
        ctx, workspace = self.ctx, self.item.workspace
        queue = deque(parts)
        written: list[Written] = []
        carried_low: Key | None = None  # an empty part's range goes to its neighbour
        try:
            while queue:
                part = queue.popleft()
                low = carried_low if carried_low is not None else part.low
                stats = RowStats()
                rows = ctx.with_progress(workspace.id, self.rows(low, part.high, stats))
                password = ctx.workbook_password(workspace)
                path = write_workbook(ctx.settings, workspace, rows, ctx.run_time, ctx.contested_slugs, password)
                if path is None:  # its messages were deleted meanwhile
                    if written:
                        written[-1].high = part.high
                    else:
                        carried_low = low
                    continue
                carried_low = None
                size = encoded_attachment_size(path.stat().st_size)
                piece = Written(low, part.high, path, *stats.counts(), size)
                if size_limit is not None and size > size_limit:
                    smaller: list[Part] = []
                    if stats.total > 1:
                        fit = max(1, min(int(stats.total * size_limit / max(size, 1) * SIZE_SAFETY), stats.total // 2))
                        smaller = cut_parts(self.keys_between(low, part.high), low, part.high, fit)
                    if len(smaller) > 1:
                        remove_files([path])
                        queue.extendleft(reversed(smaller))
                        continue
                    piece.too_big = True  # one message, or messages sharing one key
                written.append(piece)
                if piece.too_big:
                    break
        except BaseException:
            remove_files([piece.path for piece in written])
            raise
        for piece in written:
            self.result.add_counts(piece.by_status, piece.anomalies)
            self.result.files.append(str(piece.path))
        if written:
            self.result.file_path = str(written[-1].path)
        return written

    def log(self, low: Key, high: Key, status: logs.ExportStatus, piece: Written | None = None, **details: Any) -> None:
        window, path = (arrivals.time_of(low), arrivals.time_of(high)), str(piece.path) if piece else None
        recipients, counts = self.item.recipients.addresses, piece or self.result
        log_export(self.ctx, self.item.workspace, recipients, counts, status, window, path, (low, high), **details)

    def run(self) -> WorkspaceResult:
        ctx, item, result, lease = self.ctx, self.item, self.result, self.lease
        earlier = self.unknown  # only under a lease
        if earlier is not None and earlier.log_id is not None and earlier.run_id != ctx.run_id:
            logs.close_unknown_outcome(ctx.store.export_logs, earlier.log_id, ctx.run_id, ctx.clock.now())
        if ctx.request.dry_run and item.state.leased_by_other(ctx.clock.now(), ctx.run_id):
            result.reason = LEASE_HELD  # a dry run decides as the delivery does, and stops before writing
            return result
        cursor = lease.cursor if lease is not None else item.state.cursor_key
        parts = self.open_window(cursor)
        if self.cursor_ahead and lease is not None:
            result.anomalies[CURSOR_AHEAD] = 1
        if not parts:
            gone = "; the messages of an earlier email whose outcome was unknown are gone"
            return self._caught_up(NOTHING_NEW + (gone if self.unknown is not None else ""))
        reason = ctx.refusal(item.recipients, item.workspace)  # it keeps the cursor: the window goes out once fixed
        if reason is not None:
            result.message_count = sum(part.count for part in parts)  # how many wait
            return self._failed_before_email(reason)
        if lease is None:
            result.parts = len(parts)
        if ctx.request.dry_run:
            for part in parts:
                stats = RowStats()
                deque(self.rows(part.low, part.high, stats), maxlen=0)  # counts the rows, writes none
                result.add_counts(*stats.counts())
            result.outcome = "dry_run"
            return result
        try:
            written = self.write_parts(parts, None if lease is None else ctx.settings.max_attachment_bytes)
        except OSError as error:
            return self._failed_before_email(describe_file_error(error, ctx.settings.export_dir))
        if lease is None:
            result.outcome = "written" if written else "no_messages"
            return result
        remove_files(lease.state.pending_files, keep=result.files)  # superseded by this attempt's workbooks
        if not written:
            return self._caught_up("the new messages were deleted before they could be exported")
        blocked = written.pop() if written[-1].too_big else None
        result.parts = len(written)
        self._send_all(lease, written, blocked)
        return result

    def renew(self, lease: Lease) -> float | None:
        """Renews the lease while the work takes: the next renewal's time, or None once the lease is lost."""
        try:
            lease.renew()
        except LeaseLost:
            self.lost.set()
        except PyMongoError:  # MongoDB did not answer: the lease still runs on the expiry written last
            if lease.clock.now() >= lease.expires_at:
                self.lost.set()
        return None if self.lost.is_set() else time.monotonic() + renewal_interval(lease)

    def check_lease(self) -> None:
        if self.lost.is_set():
            raise LeaseLost(
                f"the lease on workspace {self.item.workspace.id} expired and was taken by another run "
                "before the email was sent (nothing was sent)"
            )

    def _send_all(self, lease: Lease, sendable: list[Written], blocked: Written | None) -> None:
        ctx, result, workspace = self.ctx, self.result, self.item.workspace
        remaining = [str(piece.path) for piece in [*sendable, blocked] if piece is not None]
        total = len(sendable)
        for number, piece in enumerate(sendable, 1):
            if number > 1 and ctx.stop_requested.is_set():
                result.reason = (
                    f"stopped after part {number - 1} of {total} (asked to stop); the next run sends the rest"
                )
                return
            self.check_lease()
            duplicate = self.unknown is not None and self.unknown.overlaps(piece.low, piece.high)
            attachment = fingerprint(piece.path)  # before the intent: an unreadable file sends nothing
            log_id = ObjectId()
            # An intent also covers what an earlier, unknown one still covers beyond this part.
            end = self.unknown.reach(piece.high) if self.unknown is not None else piece.high
            intent = InFlight(log_id, ctx.run_id, piece.low, end, number, total, ctx.clock.now())
            lease.set_in_flight(intent, remaining)
            # The attachment's fingerprint is the ledger: what this email carries.
            details = {"part": number, "parts": total, "log_id": log_id, "possible_duplicate": duplicate}
            self.log(piece.low, piece.high, logs.STATUS_SENDING, piece, attachment=attachment, **details)
            window = (arrivals.time_of(piece.low) or ctx.end_time, arrivals.time_of(piece.high) or ctx.end_time)
            to, protected = self.item.recipients.addresses, ctx.workbook_password(workspace) is not None
            mail = compose_export_mail(
                ctx.settings,
                workspace,
                ctx.run_time,
                window,
                piece.by_status,
                piece.path,
                to,
                (number, total),
                duplicate,
                protected,
            )
            try:
                self.check_lease()
                ctx.mail.send(mail)
            except MailError as error:
                reason = ctx.redact(str(error))
                unknown = error.outcome_unknown
                logs.mark_failed(ctx.store.export_logs, log_id, reason, ctx.clock.now(), outcome_unknown=unknown)
                # The server may have it (mail/errors.py): the intent stays, so the next delivery is flagged.
                self._record_failure(lease, reason, intent if unknown else self._unknown_after(piece.low))
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
            self._record_failure(lease, reason, self.unknown, [str(blocked.path)])

    def _unknown_after(self, key: Key) -> InFlight | None:  # None once the earlier unknown range is passed
        return self.unknown.after(key) if self.unknown is not None else None

    def _too_big(self, piece: Written) -> str:
        ctx, workspace = self.ctx, self.item.workspace
        arrived = arrivals.time_of(piece.low)
        when = f" (arrived {arrived:%Y-%m-%d %H:%M:%S} UTC)" if arrived is not None else ""
        count = piece.message_count
        what = "a single message" if count <= 1 else f"{count_noun(count, 'message')} that arrived at the same moment"
        # One message can be passed alone (its _id; a rare path: two queries); messages sharing a date key only together.
        message_id = None
        if count <= 1:
            chat_ids = sorted(ownership.chats_of_workspace(ctx.store.chats, workspace).owned)
            found = next(arrivals.window_messages(ctx.store.messages, ctx.key, chat_ids, piece.low, piece.high), None)
            message_id = found.get("_id") if found is not None else None
        move = f"--move-past {message_id}" if isinstance(message_id, ObjectId) else "--move-to"
        return (
            f"{what}{when} makes a workbook of {piece.encoded_size / 2**20:.2f} MB once encoded for "
            f"email, over EXPORT_MAX_ATTACHMENT_MB={ctx.settings.export_max_attachment_mb:g}; the file is kept at "
            f"{piece.path} and the cursor stays before it: raise EXPORT_MAX_ATTACHMENT_MB if the mail "
            f"server allows it, or move the cursor past it with `wa-export state {workspace.id} {move}`"
        )

    def _caught_up(self, reason: str) -> WorkspaceResult:
        if self.lease is not None:
            self.lease.caught_up(self.ctx.end_key, release=True, force=self.cursor_ahead)
            self.released = True
        self.result.outcome, self.result.reason = "no_messages", reason
        return self.result

    def _failed_before_email(self, reason: str) -> WorkspaceResult:
        """Logged and counted on its state (not by --dry-run / --no-email); the cursor and any intent unmoved."""
        self.result.outcome, self.result.reason = "failed", reason
        if self.lease is not None:
            self.log(self.low, self.ctx.end_key, logs.STATUS_FAILED, error=reason)
            self._record_failure(self.lease, reason, KEEP_IN_FLIGHT, None)
        return self.result

    def _record_failure(self, lease: Lease, reason: str, in_flight: object, pending: list[str] | None = None) -> None:
        self.result.outcome, self.result.reason = "failed", reason
        lease.failed(reason, in_flight=in_flight, pending_files=pending)
        self.released = True


def deliver(ctx: RunContext, item: WorkItem) -> WorkspaceResult:
    """The scheduled delivery of one workspace (or, with --dry-run / --no-email, a look at it)."""
    ctx = ctx.in_zone(item.zone)
    result = WorkspaceResult.of(item.workspace, "skipped", item.recipients)
    if ctx.request.dry_run or not ctx.request.send_email:
        return WorkspaceExport(ctx, item, result).run()
    duration = timedelta(seconds=ctx.settings.lease_seconds)
    lease = acquire_lease(ctx.store, item.workspace.id, ctx.run_id, duration, ctx.clock, item.first_cursor)
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
    delivery = WorkspaceExport(ctx, item, result, lease, unknown=lease.state.in_flight)
    first_renewal = time.monotonic() + renewal_interval(lease)
    count_failure = True  # a lost lease is the new owner's to count
    try:
        renewals = _RENEWALS.add(Timer(lambda: first_renewal, partial(delivery.renew, lease)))
        try:
            return delivery.run()
        finally:
            _RENEWALS.remove(renewals)  # waits for a renewal in progress
    except LeaseLost as error:
        count_failure = False
        reason = ctx.redact(f"{error}; nothing more was sent")
    except Exception as error:  # MongoDB gone (ConnectionFailure) stops the whole run (exit 3)
        reason = workspace_error(ctx, result, error)
    finally:
        if not delivery.released:
            with suppress(PyMongoError):  # it expires by itself; a connection error surfaces elsewhere
                lease.release()
    result.outcome, result.reason = "failed", reason
    with unless_connection_lost():  # logged and counted if MongoDB takes it
        low = lease.cursor if arrivals.is_key(lease.cursor) else ctx.end_key
        WorkspaceExport(ctx, item, result).log(low, ctx.end_key, logs.STATUS_FAILED, error=reason)
        if count_failure:
            lease.count_escaped_failure(reason)
    return result


def renewal_interval(lease: Lease) -> float:
    return max(lease.duration.total_seconds() / 3, 0.5)


def workspace_error(ctx: RunContext, result: WorkspaceResult, error: Exception) -> str:
    """The reason a workspace failed on an error of its own; a lost MongoDB connection is re-raised: it ends the run.
    An error nobody anticipated (a bug, to be reported) keeps its traceback."""
    if isinstance(error, ConnectionFailure):
        raise error
    if isinstance(error, PyMongoError):
        return ctx.redact(f"MongoDB error: {error}")
    result.traceback = ctx.redact("".join(traceback.format_exception(error)))
    return ctx.redact(f"internal error ({type(error).__name__}: {error})")


@contextmanager
def unless_connection_lost() -> Iterator[None]:
    """Ignores a MongoDB error of a write the result does not depend on; a lost connection still ends the run."""
    try:
        yield
    except PyMongoError as error:
        if isinstance(error, ConnectionFailure):
            raise


def log_export(
    ctx: RunContext,
    workspace: Workspace,
    recipients: tuple[str, ...],
    counts: WorkspaceResult | Written,
    status: logs.ExportStatus,
    window: tuple[datetime | None, datetime | None],
    file_path: str | None = None,
    keys: tuple[Key, Key] | None = None,
    *,
    part: int | None = None,
    parts: int | None = None,
    attachment: Fingerprint | None = None,  # the file the email carries: the delivery ledger
    **details: Any,  # error, possible_duplicate, log_id: see logs.insert_export
) -> None:
    """One export_logs entry: a window, a part of one, or a manual export."""
    entry = logs.ExportEntry(
        workspace, recipients, ctx.run_id, ctx.request.trigger, ctx.run_time, counts.message_count,
        counts.by_status, counts.anomalies, *window, file_path, keys, part, parts, attachment,
    )  # fmt: skip
    logs.insert_export(ctx.store.export_logs, entry, ctx.clock.now(), status=status, **details)


def write_workbook(
    settings: Settings,
    workspace: Workspace,
    rows: Iterator[Row],
    run_time: datetime,
    contested_slugs: frozenset[str] = frozenset(),
    password: str | None = None,
) -> Path | None:
    """Stream the rows into a new workbook (encrypted with a `password`); None (and no file, no folder) when there are
    none. The original service's unmarked `<slug>/` folder is adopted unless several active workspaces share the slug."""
    first = next(rows, None)
    if first is None:
        return None
    slug = slugify(workspace.name, workspace.id)
    adopt = workspace.status == "active" and slug not in contested_slugs
    folder = workspace_folder(settings.export_dir, slug, workspace.id, adopt_unmarked=adopt)
    candidates = iter(publish_path_candidates(folder, slug, run_time.astimezone(settings.export_timezone)))
    final_path, zone_name = next(candidates), settings.timezone_name
    with WorkbookWriter(
        final_path, settings.export_timezone, workspace_name=workspace.name, timezone_name=zone_name
    ) as writer:
        writer.append(*first)
        writer.append_many(rows)
        return writer.commit(itertools.chain([final_path], candidates), password=password)


def remove_files(paths: Iterable[str | Path], keep: Iterable[str | Path] = ()) -> None:
    """Delete superseded workbooks (never one in `keep`); already gone is fine."""
    kept = {str(path) for path in keep}
    for path in paths:
        if str(path) not in kept:
            unlink_quietly(path)


def describe_file_error(error: OSError, export_dir: Path) -> str:
    where, none_kept = error.filename or export_dir, "— no partial file was kept"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full while writing {where}; free space in EXPORT_DIR ({export_dir}) {none_kept}"
    if error.errno == errno.EFBIG:
        return (
            f"the export file grew past this process's file-size limit (ulimit -f) while writing {where}; "
            f"raise the limit for wa-export or export a shorter period (EXPORT_DIR {export_dir}) {none_kept}"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {where} ({error.strerror}); make EXPORT_DIR ({export_dir}) writable by this user"
    if error.errno == errno.ENOTDIR:
        return (
            f"cannot create the export folder {where} ({error.strerror}): a regular file is in the way; "
            f"point EXPORT_DIR ({export_dir}) at a directory"
        )
    return f"cannot write the export file in {where} ({error.strerror or error}); check EXPORT_DIR ({export_dir})"
