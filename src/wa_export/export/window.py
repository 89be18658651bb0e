"""A workspace's window in arrival order: its keys, parts (one email each), workbooks and log entries.

Shared by the delivery, --no-email and --dry-run. A part is [low, high): moving the cursor to its `high`
passes exactly the messages it delivered.
"""

from __future__ import annotations

import errno
import itertools
import os
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bson import ObjectId

from wa_export.export.context import RunContext
from wa_export.export.plan import AMBIGUOUS_CHAT, WorkItem
from wa_export.export.results import WorkspaceResult
from wa_export.export.rows import Row, RowStats, message_rows
from wa_export.mail.message import encoded_attachment_size
from wa_export.settings import Settings
from wa_export.store import arrivals, logs, ownership
from wa_export.store.arrivals import Key
from wa_export.store.connection import Chat, Workspace
from wa_export.workbook.fingerprint import Fingerprint
from wa_export.workbook.naming import publish_path_candidates, slugify, workspace_folder
from wa_export.workbook.writer import WorkbookWriter

SIZE_SAFETY = 0.9  # a too-big part is cut to this share of the rows that would just fit: one rewrite nearly always


@dataclass(frozen=True)
class Part:
    low: Key  # inclusive
    high: Key  # exclusive
    count: int  # messages in it when the keys were read


def cut_parts(keys: Iterable[Key], low: Key, high: Key, max_rows: int) -> list[Part]:
    """Parts of at most `max_rows` messages from ascending `keys`; messages sharing a key stay in one part."""
    parts: list[Part] = []
    count = 0
    start = low
    previous: Key | None = None
    for key in keys:
        if count >= max_rows and key != previous:
            parts.append(Part(start, key, count))
            start, count = key, 0
        count += 1
        previous = key
    if count:
        parts.append(Part(start, high, count))
    return parts


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
    def message_count(self) -> int:
        return sum(self.by_status.values())


@dataclass
class ArrivalWindow:
    """A workspace's [low, end) with how to read its keys and messages."""

    low: Key
    chats: dict[object, Chat]
    chat_ids: list[ObjectId]
    keys: list[Key] | None  # from the pass, or None: read on demand
    cursor_ahead: bool = False
    documents: list[tuple[Key, dict[str, Any]]] | None = None  # the messages, when the pass kept them
    found_chats: set[ObjectId] = field(default_factory=set)


@dataclass
class WorkspaceExport:
    """Reading and writing one workspace's window; shared by deliveries, --no-email and --dry-run."""

    ctx: RunContext
    item: WorkItem
    result: WorkspaceResult

    def window(self, cursor: object) -> ArrivalWindow:
        ctx, item = self.ctx, self.item
        # A cursor of another EXPORT_ARRIVAL_FIELD (written since the plan) raises: the delivery fails, nothing moves.
        low, ahead = (item.start, False) if cursor is None else ctx.start_at(item.workspace.id, cursor)
        if item.current and low >= item.start:
            keys = [arrival for arrival in item.keys if arrival >= low]
            documents = None if item.documents is None else [pair for pair in item.documents if pair[0] >= low]
            return ArrivalWindow(low, item.chats, sorted(item.chat_ids), keys, ahead, documents=documents)
        chats = ownership.chats_of_workspace(ctx.store.chats, item.workspace)
        # Messages of chats naming this workspace among others go to nobody: counted here before where the
        # pass counted them (it has the rest), so once and only for a workspace such a chat names.
        counted_from = item.ambiguous_counted_from
        high = ctx.end_key if counted_from is None else min(counted_from, ctx.end_key)
        if chats.shared and low < high:
            found = arrivals.count_of_chats(ctx.store.messages, ctx.key, chats.shared, low, high)
            if found:
                self.result.anomalies[AMBIGUOUS_CHAT] = found
        return ArrivalWindow(low, ownership.by_both_forms(chats.owned), sorted(chats.owned), None, ahead)

    def keys_between(self, window: ArrivalWindow, low: Key, high: Key) -> Iterator[Key]:
        if window.keys is not None:
            yield from (arrival for arrival in window.keys if low <= arrival < high)
            return
        ctx = self.ctx
        for arrival, raw_chat_id in arrivals.keys_of_chats(ctx.store.messages, ctx.key, window.chat_ids, low, high):
            chat_id = ownership.chat_of_message(raw_chat_id)
            if chat_id is not None:
                window.found_chats.add(chat_id)
            yield arrival

    def parts(self, window: ArrivalWindow) -> list[Part]:
        end = self.ctx.end_key
        parts = cut_parts(
            self.keys_between(window, window.low, end), window.low, end, self.ctx.settings.export_max_rows_per_email
        )
        if window.keys is None:
            window.chat_ids = sorted(window.found_chats)  # only chats with messages in the window are queried
        return parts

    def rows(self, window: ArrivalWindow, low: Key, high: Key, stats: RowStats) -> Iterator[Row]:
        messages: Iterable[dict[str, Any]]
        if window.documents is not None:  # the pass kept them: no query
            messages = arrivals.in_row_order(document for key, document in window.documents if low <= key < high)
        else:
            messages = arrivals.window_messages(self.ctx.store.messages, self.ctx.key, window.chat_ids, low, high)
        return message_rows(messages, window.chats, self.item.workspace.id, stats)

    def add_written(self, written: list[Written]) -> None:
        for piece in written:
            self.result.add_counts(piece.by_status, piece.anomalies)
            self.result.files.append(str(piece.path))
        if written:
            self.result.file_path = str(written[-1].path)

    def write_parts(self, window: ArrivalWindow, parts: Iterable[Part], size_limit: int | None) -> list[Written]:
        """Every part's workbook, in order; a part over `size_limit` is rewritten as smaller parts.

        A too-big part no boundary can split ends the list (`too_big`): nothing after it goes before it.
        On a write error the files written so far are removed and the error raised.
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
                rows = ctx.with_progress(self.item.workspace.id, self.rows(window, low, part.high, stats))
                path = write_workbook(
                    ctx.settings,
                    self.item.workspace,
                    rows,
                    ctx.run_time,
                    ctx.contested_slugs,
                    password=ctx.workbook_password(self.item.workspace),
                )
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
                        estimate = int(stats.total * size_limit / max(size, 1) * SIZE_SAFETY)
                        fit = max(1, min(estimate, stats.total // 2))
                        smaller = cut_parts(self.keys_between(window, low, part.high), low, part.high, fit)
                    if len(smaller) <= 1:  # one message, or messages sharing one key
                        piece.too_big = True
                        written.append(piece)
                        break
                    remove_files([path])
                    queue.extendleft(reversed(smaller))
                    continue
                written.append(piece)
        except BaseException:
            remove_files([piece.path for piece in written])
            raise
        return written

    def log(self, low: Key, high: Key, status: logs.ExportStatus, piece: Written | None = None, **details: Any) -> None:
        """This window's (or one part's) export_logs entry."""
        item, path = self.item, str(piece.path) if piece else None
        window = (arrivals.time_of(low), arrivals.time_of(high))
        counts = piece or self.result
        log_export(
            self.ctx, item.workspace, item.recipients.addresses, counts, status, window, path, (low, high), **details
        )


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
    *,
    password: str | None = None,
) -> Path | None:
    """Stream the rows into a new workbook; None (and no file, no folder) when there are none.

    The original service's unmarked `<slug>/` folder is adopted unless several active workspaces share
    the slug. With a `password` the published file is the encrypted workbook (the name stays .xlsx).
    """
    first = next(rows, None)
    if first is None:
        return None
    slug = slugify(workspace.name, workspace.id)
    adopt = workspace.status == "active" and slug not in contested_slugs
    folder = workspace_folder(settings.export_dir, slug, workspace.id, adopt_unmarked=adopt)
    candidates = iter(publish_path_candidates(folder, slug, run_time.astimezone(settings.export_timezone)))
    final_path = next(candidates)
    with WorkbookWriter(
        final_path, settings.export_timezone, workspace_name=workspace.name, timezone_name=settings.timezone_name
    ) as writer:
        writer.append(*first)
        writer.append_many(rows)
        return writer.commit(itertools.chain([final_path], candidates), password=password)


def remove_files(paths: Iterable[str | Path], keep: Iterable[str | Path] = ()) -> None:
    """Delete superseded workbooks (never one in `keep`); already gone is fine."""
    kept = {str(path) for path in keep}
    for path in paths:
        if str(path) not in kept:
            try:
                os.unlink(path)
            except OSError:
                pass


def describe_file_error(error: OSError, export_dir: Path) -> str:
    where = error.filename or export_dir
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"the disk is full while writing {where}; free space in EXPORT_DIR ({export_dir}) — no partial file was kept"
    if error.errno == errno.EFBIG:
        return (
            f"the export file grew past this process's file-size limit (ulimit -f) while writing {where}; "
            f"raise the limit for wa-export or export a shorter period (EXPORT_DIR {export_dir}) — no partial file was kept"
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write in {where} ({error.strerror}); make EXPORT_DIR ({export_dir}) writable by this user"
    if error.errno == errno.ENOTDIR:
        return (
            f"cannot create the export folder {where} ({error.strerror}): a regular file is in the way; "
            f"point EXPORT_DIR ({export_dir}) at a directory"
        )
    return f"cannot write the export file in {where} ({error.strerror or error}); check EXPORT_DIR ({export_dir})"
