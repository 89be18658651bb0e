"""The delivery ledger: an export_logs entry read back as what was sent to whom, its messages' range (a scheduled
window's arrival keys, else a manual export's timestamps: `resend` rebuilds from it) and its file's hash (`verify`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bson import ObjectId
from pymongo import ASCENDING

from wa_export.addresses import split_address_list
from wa_export.clock import as_utc_or_none
from wa_export.store.arrivals import Key, is_key
from wa_export.store.connection import Documents, read_fields

Logs = Documents
RangeKind = Literal["arrival", "timestamp"]
MATCHES_SHOWN = 20  # every workbook is a new file, so one match is the rule: a bound, not a page size


@dataclass(frozen=True)
class RecordedRange:
    """The messages of an entry: arrival keys [low, high), or message timestamps [start, end)."""

    kind: RangeKind
    low: Key
    high: Key


@dataclass(frozen=True)
class LedgerEntry:
    id: ObjectId
    workspace_id: str
    workspace_name: str
    status: str
    trigger: str | None
    export_time: datetime | None  # the run's time: its subject and file name
    created_at: datetime | None
    updated_at: datetime | None
    recipients: tuple[str, ...]
    message_count: int
    window_start: datetime | None
    window_end: datetime | None
    keys: tuple[Key, Key] | None
    part: int | None
    parts: int | None
    file_path: str | None
    file_name: str | None
    attachment_sha256: str | None
    attachment_bytes: int | None
    resend_of: ObjectId | None

    @property
    def sent_at(self) -> datetime | None:
        """When the email went out: a completed entry's last update is the server's acceptance."""
        return self.updated_at or self.created_at

    @property
    def recorded_range(self) -> RecordedRange | None:
        """What it held: its arrival keys, else its timestamp window; None for an entry without either."""
        if self.keys is not None:
            return RecordedRange("arrival", *self.keys)
        if self.window_start is not None and self.window_end is not None:
            return RecordedRange("timestamp", self.window_start, self.window_end)
        return None


def read_entry(document: Mapping[str, Any]) -> LedgerEntry:
    """An export_logs document as a ledger entry; fields of the wrong type read as absent."""
    low, high = document.get("window_start_key"), document.get("window_end_key")
    sent_to = document.get("email_sent_to")
    return LedgerEntry(
        **read_fields(
            LedgerEntry,
            document,
            id=document["_id"],
            workspace_id=str(document.get("workspace_id") or ""),
            export_time=as_utc_or_none(document.get("export_timestamp")),
            recipients=split_address_list(sent_to)[0] if isinstance(sent_to, str) else (),
            # Both ends of one kind: MongoDB compares a range within one type only.
            keys=(low, high) if is_key(low) and is_key(high) and type(low) is type(high) else None,
        )
    )


def entry_by_id(logs: Logs, log_id: ObjectId) -> LedgerEntry | None:
    document = logs.find_one({"_id": log_id})
    return None if document is None else read_entry(document)


def entries_with_sha256(logs: Logs, sha256: str) -> list[LedgerEntry]:
    """The entries that recorded this attachment hash, oldest first (the original before any resend of it)."""
    found = logs.find({"attachment_sha256": sha256.lower()}).sort([("created_at", ASCENDING), ("_id", ASCENDING)])
    return [read_entry(document) for document in found.limit(MATCHES_SHOWN)]
