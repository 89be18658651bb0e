"""Leases on export_state documents: one run at a time per workspace (docs/design.md, "Leases").

A lease is taken with one atomic `find_one_and_update` (upsert): the filter
only matches a free or expired lease, so a contested upsert fails with
DuplicateKeyError exactly as a held lease should. Leases expire on the
database clock, so a killed run never blocks a workspace for longer than
EXPORT_LEASE_SECONDS. Every later write is conditional on still owning the
lease, so a run that stalled past its expiry can never move a cursor that
another run now controls.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from wa_export.clock import DatabaseClock
from wa_export.store.export_state import (
    FirstCursor,
    InFlight,
    WorkspaceState,
    lease_is_free,
)

KEEP_IN_FLIGHT = object()  # Lease.failed: leave the stored in_flight as it is


class LeaseLost(Exception):
    """Another run took over this workspace (our lease expired); stop before sending or writing."""


@dataclass
class Lease:
    """An owned lease on one workspace's export_state document."""

    collection: Collection[dict[str, Any]]
    workspace_id: str
    owner: str
    duration: timedelta
    clock: DatabaseClock
    expires_at: datetime
    state: WorkspaceState
    new_cursor_source: str | None = None  # set when this lease created the cursor
    cursor: object = field(init=False)

    def __post_init__(self) -> None:
        self.cursor = self.state.cursor

    def _mine(self, **extra: Any) -> dict[str, Any]:
        return {"_id": self.workspace_id, "lease_owner": self.owner, **extra}

    def _require(self, matched: int, what: str) -> None:
        if matched != 1:
            raise LeaseLost(
                f"the lease on workspace {self.workspace_id} expired and was taken by another run before {what}"
            )

    def renew(self) -> None:
        """Extend the lease; raises LeaseLost if it is no longer ours."""
        expires_at = self.clock.now() + self.duration
        result = self.collection.update_one(self._mine(), {"$set": {"lease_expires_at": expires_at}})
        self._require(result.matched_count, "it could be renewed")
        self.expires_at = expires_at

    def set_in_flight(self, in_flight: InFlight, pending_files: Sequence[str]) -> None:
        """Record the intent to send, before the email goes to SMTP."""
        now = self.clock.now()
        result = self.collection.update_one(
            self._mine(),
            {"$set": {"in_flight": in_flight.as_document(), "pending_files": list(pending_files),
                      "last_attempt_at": now, "updated_at": now}},
        )
        self._require(result.matched_count, "the email was sent (nothing was sent)")

    def delivered(
        self,
        to_key: object,
        delivered_file: str | None,
        *,
        possible_duplicate: bool,
        in_flight: InFlight | None,
        release: bool,
    ) -> None:
        """The email was accepted: move the cursor past it, reset the failures.

        `in_flight` is what stays unknown beyond this part (an earlier run's intent
        reaching further), usually None.
        """
        now = self.clock.now()
        changes: dict[str, Any] = {
            "cursor": to_key,
            "cursor_source": "export",
            "cursor_set_at": now,
            "in_flight": in_flight.as_document() if in_flight is not None else None,
            "last_success_at": now,
            "consecutive_failures": 0,
            "last_error": None,
            "updated_at": now,
        }
        if possible_duplicate:
            changes["last_possible_duplicate_at"] = now
        if release:
            changes.update(lease_owner=None, lease_expires_at=None)
        update: dict[str, Any] = {"$set": changes}
        if delivered_file is not None:
            update["$pull"] = {"pending_files": delivered_file}
        result = self.collection.update_one(self._mine(cursor=self.cursor), update)
        self._require(result.matched_count, "the cursor could move")
        self.cursor = to_key

    def caught_up(self, end_key: object, *, release: bool, force: bool = False) -> None:
        """Nothing (left) to deliver up to `end_key`: the cursor moves there, any stale intent is closed.

        A cursor already at or past `end_key` stays, unless `force` (a cursor ahead of
        the database clock is pulled back to the end key).
        """
        now = self.clock.now()
        changes: dict[str, Any] = {
            "in_flight": None,
            "consecutive_failures": 0,
            "last_error": None,
            "last_success_at": now,
            "updated_at": now,
        }
        # The cursor is of the run's key kind: the window refused any other (ArrivalKey.position).
        moves = force or self.cursor is None or bool(self.cursor < end_key)  # type: ignore[operator]
        if moves:
            changes.update(cursor=end_key, cursor_source="export", cursor_set_at=now)
        if release:
            changes.update(lease_owner=None, lease_expires_at=None)
        result = self.collection.update_one(self._mine(cursor=self.cursor), {"$set": changes})
        self._require(result.matched_count, "the cursor could move")
        if moves:
            self.cursor = end_key

    def failed(
        self, error: str, *, in_flight: object = KEEP_IN_FLIGHT, pending_files: Sequence[str] | None, release: bool
    ) -> None:
        """A delivery failed: the cursor stays; the failure is counted for `state` and the next run.

        `in_flight` is what may have been delivered anyway (an InFlight), None, or
        KEEP_IN_FLIGHT to leave the stored one as it is.
        """
        now = self.clock.now()
        changes: dict[str, Any] = {"last_error": error, "last_attempt_at": now, "updated_at": now}
        if in_flight is None or isinstance(in_flight, InFlight):
            changes["in_flight"] = in_flight.as_document() if in_flight is not None else None
        if pending_files is not None:
            changes["pending_files"] = list(pending_files)
        if release:
            changes.update(lease_owner=None, lease_expires_at=None)
        result = self.collection.update_one(self._mine(), {"$set": changes, "$inc": {"consecutive_failures": 1}})
        self._require(result.matched_count, "the failure could be recorded")

    def release(self) -> None:
        # Conditional: never release a lease that expired and now belongs to another run.
        self.collection.update_one(
            self._mine(), {"$set": {"lease_owner": None, "lease_expires_at": None, "updated_at": self.clock.now()}}
        )


def acquire_lease(
    collection: Collection[dict[str, Any]],
    workspace_id: str,
    owner: str,
    duration: timedelta,
    clock: DatabaseClock,
    first_cursor: FirstCursor | None = None,
) -> Lease | None:
    """Take the workspace's lease, or return None if another run holds an unexpired one.

    A workspace without a cursor gets `first_cursor` in the same write (a new
    document) or right after (an existing document without one), so a failing
    first delivery still leaves the start pinned.
    """
    now = clock.now()
    expires_at = now + duration
    on_insert: dict[str, Any] = {"created_at": now, "consecutive_failures": 0, "pending_files": []}
    if first_cursor is not None:
        on_insert.update(cursor=first_cursor.key, cursor_source=first_cursor.source, cursor_set_at=now,
                         in_flight=first_cursor.in_flight.as_document() if first_cursor.in_flight else None)
    try:
        document = collection.find_one_and_update(
            {"_id": workspace_id, **lease_is_free(now)},
            {
                "$set": {"lease_owner": owner, "lease_expires_at": expires_at, "lease_acquired_at": now,
                         "updated_at": now},
                "$setOnInsert": on_insert,
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return None
    if document is None or document.get("lease_owner") != owner:
        return None
    state = WorkspaceState.from_document(workspace_id, document)
    lease = Lease(collection, workspace_id, owner, duration, clock, expires_at, state)
    if first_cursor is not None and document.get("created_at") == now and state.cursor == first_cursor.key:
        lease.new_cursor_source = first_cursor.source
    if not state.has_cursor and first_cursor is not None:
        # An older document (e.g. one with only a timestamp watermark): pin the cursor now.
        changes: dict[str, Any] = {"cursor": first_cursor.key, "cursor_source": first_cursor.source,
                                   "cursor_set_at": now, "updated_at": now}
        if first_cursor.in_flight is not None:
            changes["in_flight"] = first_cursor.in_flight.as_document()
        result = collection.update_one(
            {"_id": workspace_id, "lease_owner": owner, "cursor": {"$exists": False}}, {"$set": changes}
        )
        if result.matched_count == 1:
            lease.state = WorkspaceState.from_document(workspace_id, {**document, **changes})
            lease.cursor = first_cursor.key
            lease.new_cursor_source = first_cursor.source
    return lease


__all__ = ["KEEP_IN_FLIGHT", "Lease", "LeaseLost", "acquire_lease"]
