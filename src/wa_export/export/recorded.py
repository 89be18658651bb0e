"""A workspace's rows over a range, read as the export reads them: for manual exports and for `resend`.

Both read the workspace's own chats (store/ownership.py) on the `workspace_id` index, then their
messages in the workbook's row order, (timestamp, _id), and turn them into rows (export/rows.py). A
scheduled window's rows are the same read by arrival keys (export/window.py reads them the same
way, or sorts the documents its pass kept into that order), so a resend of a part rebuilds its rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from wa_export.export.rows import Row, RowStats, message_rows
from wa_export.store import arrivals, ownership
from wa_export.store.arrivals import ArrivalKey, Key
from wa_export.store.connection import Store, Workspace


def rows_by_timestamp(
    store: Store, workspace: Workspace, start: datetime, end: datetime, stats: RowStats
) -> Iterator[Row]:
    """The rows of messages with start <= timestamp < end: a manual export's window."""
    found = ownership.chats_of_workspace(store.chats, workspace)
    messages = arrivals.messages_by_timestamp(store.messages, found.message_chat_ids(), start, end)
    return message_rows(messages, ownership.by_both_forms(found.owned), workspace.id, stats)


def rows_by_arrival(
    store: Store, key: ArrivalKey, workspace: Workspace, low: Key, high: Key, stats: RowStats
) -> Iterator[Row]:
    """The rows of messages with low <= arrival key < high: a scheduled window, or one part of it."""
    found = ownership.chats_of_workspace(store.chats, workspace)
    messages = arrivals.window_messages(store.messages, key, sorted(found.owned), low, high)
    return message_rows(messages, ownership.by_both_forms(found.owned), workspace.id, stats)
