"""A workspace's window in arrival order: its keys, its parts' workbooks, its export_logs entries.

Shared by the scheduled delivery (export/delivery.py) and by --no-email and
--dry-run, which look at the same window without a lease. The window's keys
(and, within the pass's budget, its messages) come from the run's shared pass
when it covers the cursor, else from the workspace's own chats (a laggard, or a
cursor moved back since the pass).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId

from wa_export.export.context import RunContext
from wa_export.export.files import remove_files, write_workbook
from wa_export.export.parts import Part, cut_parts, rows_that_fit
from wa_export.export.plan import AMBIGUOUS_CHAT, WorkItem
from wa_export.export.results import WorkspaceResult
from wa_export.export.rows import RowStats, message_rows
from wa_export.export.status import STATUSES
from wa_export.mail.message import encoded_attachment_size
from wa_export.store import arrivals, logs, ownership
from wa_export.store.arrivals import Key
from wa_export.store.connection import Chat


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
class ArrivalWindow:
    """A workspace's [low, end) with how to read its keys and messages."""

    low: Key
    chats: dict[object, Chat]
    chat_ids: list[ObjectId]
    keys: list[Key] | None  # in memory (from the pass), or None: read on demand
    cursor_ahead: bool = False
    documents: list[tuple[Key, dict[str, Any]]] | None = None  # the messages, when the pass kept them
    found_chats: set[ObjectId] = field(default_factory=set)


class WorkspaceExport:
    """Reading and writing one workspace's window; shared by deliveries, --no-email and --dry-run."""

    def __init__(self, ctx: RunContext, item: WorkItem, result: WorkspaceResult) -> None:
        self.ctx = ctx
        self.item = item
        self.result = result

    # --- the window ------------------------------------------------------------------

    def window(self, cursor: object) -> ArrivalWindow:
        """The window from `cursor`: the pass's keys when they cover it, else the workspace's own path."""
        ctx, item = self.ctx, self.item
        # A cursor of another EXPORT_ARRIVAL_FIELD (written since the plan) raises: the delivery fails, nothing moves.
        low, ahead = (item.start, False) if cursor is None else ctx.start_at(item.workspace.id, cursor)
        if item.current and low >= item.start:
            keys = [arrival for arrival in item.keys if arrival >= low]
            documents = None if item.documents is None else [pair for pair in item.documents if pair[0] >= low]
            return ArrivalWindow(low, item.chats, sorted(item.chat_ids), keys, ahead, documents=documents)
        # Lagging, or the cursor was moved back since the pass: this workspace's chats, on their index.
        chats = ownership.chats_of_workspace(ctx.store.chats, item.workspace)
        self._count_ambiguous(chats.shared, low)
        return ArrivalWindow(low, ownership.by_both_forms(chats.owned), sorted(chats.owned), None, ahead)

    def _count_ambiguous(self, shared: list[ObjectId], low: Key) -> None:
        """Messages of chats that name this workspace among others go to nobody, counted as the pass counts them.

        Only those before where the pass counted (the pass has the rest): one count, and
        only for a workspace that such a chat names.
        """
        ctx, counted_from = self.ctx, self.item.ambiguous_counted_from
        high = ctx.end_key if counted_from is None else min(counted_from, ctx.end_key)
        if not shared or not low < high:
            return
        found = arrivals.count_of_chats(ctx.store.messages, ctx.key, shared, low, high)
        if found:
            self.result.anomalies[AMBIGUOUS_CHAT] = found

    def keys_between(self, window: ArrivalWindow, low: Key, high: Key) -> Iterator[Key]:
        if window.keys is not None:
            return (arrival for arrival in window.keys if low <= arrival < high)
        return self._read_keys(window, low, high)

    def _read_keys(self, window: ArrivalWindow, low: Key, high: Key) -> Iterator[Key]:
        for arrival, raw_chat_id in arrivals.keys_of_chats(
            self.ctx.store.messages, self.ctx.key, window.chat_ids, low, high
        ):
            chat_id = ownership.chat_of_message(raw_chat_id)
            if chat_id is not None:
                window.found_chats.add(chat_id)
            yield arrival

    def parts(self, window: ArrivalWindow) -> list[Part]:
        parts = cut_parts(
            self.keys_between(window, window.low, self.ctx.end_key),
            window.low,
            self.ctx.end_key,
            self.ctx.settings.export_max_rows_per_email,
        )
        if window.keys is None:
            # Only the chats that have messages in the window go into the message queries.
            window.chat_ids = sorted(window.found_chats)
        return parts

    def rows(self, window: ArrivalWindow, low: Key, high: Key, stats: RowStats) -> Iterator[Any]:
        messages: Iterable[dict[str, Any]]
        if window.documents is not None:  # the pass kept them: no query
            messages = arrivals.in_row_order(document for key, document in window.documents if low <= key < high)
        else:
            messages = arrivals.window_messages(self.ctx.store.messages, self.ctx.key, window.chat_ids, low, high)
        return message_rows(messages, window.chats, self.item.workspace.id, stats)

    # --- workbooks ---------------------------------------------------------------------

    def write_parts(self, window: ArrivalWindow, parts: Iterable[Part], size_limit: int | None) -> list[Written]:
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
                rows = ctx.with_progress(self.item.workspace.id, self.rows(window, low, part.high, stats))
                path = write_workbook(ctx.settings, self.item.workspace, rows, ctx.run_time, ctx.contested_slugs)
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
                    smaller: list[Part] = []
                    if stats.total > 1:
                        fit = rows_that_fit(stats.total, size, size_limit)
                        smaller = cut_parts(self.keys_between(window, low, part.high), low, part.high, fit)
                    if len(smaller) <= 1:
                        # One message, or messages sharing one arrival key: no boundary can split it.
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

    def log(
        self,
        low: Key,
        high: Key,
        *,
        status: logs.ExportStatus,
        error: str | None = None,
        piece: Written | None = None,
        part: int | None = None,
        parts: int | None = None,
        log_id: ObjectId | None = None,
        possible_duplicate: bool = False,
    ) -> None:
        """This window's (or one part's) export_logs entry."""
        ctx, item, result = self.ctx, self.item, self.result
        entry = logs.ExportEntry(
            workspace=item.workspace,
            recipients=item.recipients.addresses,
            run_id=ctx.run_id,
            trigger=ctx.request.trigger,
            export_timestamp=ctx.run_time,
            message_count=piece.count if piece is not None else result.message_count,
            by_status=piece.by_status if piece is not None else result.by_status,
            anomalies=piece.anomalies if piece is not None else result.anomalies,
            window_start=arrivals.time_of(low),
            window_end=arrivals.time_of(high),
            file_path=str(piece.path) if piece is not None else None,
            keys=(low, high),
            part=part,
            parts=parts,
        )
        logs.insert_export(
            ctx.store.export_logs,
            entry,
            ctx.clock.now(),
            status=status,
            error=error,
            possible_duplicate=possible_duplicate,
            log_id=log_id,
        )


__all__ = ["ArrivalWindow", "WorkspaceExport", "Written", "counts"]
