"""Export windows and leases on the `export_state` collection (SPEC §5).

One document per workspace: `{_id: "<workspace id>", watermark, lease_owner,
lease_expires_at, ...}`. A lease is taken with one atomic `find_one_and_update`
(upsert): the filter only matches a free or expired lease, so a contested
upsert fails with DuplicateKeyError exactly as a held lease should. Leases
expire, so a killed run never blocks a workspace for longer than
`EXPORT_LEASE_SECONDS`. Every later write is conditional on still owning the
lease, so a run that stalled past its expiry can never move a watermark that
another run now controls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from wa_export.clock import utc_now


@dataclass(frozen=True)
class Window:
    """A half-open time range [start, end) in UTC."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.end <= self.start


def scheduled_window(watermark: datetime | None, now: datetime, interval_minutes: int, lag_seconds: int) -> Window:
    """[watermark, now - lag); the first window starts one interval before its end."""
    end = now - timedelta(seconds=lag_seconds)
    start = watermark if watermark is not None else end - timedelta(minutes=interval_minutes)
    return Window(_as_utc(start), end)


def _as_utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class LeaseLost(Exception):
    """Another run took over this workspace (our lease expired); stop before sending or writing."""


@dataclass
class Lease:
    """An owned lease on one workspace's export_state document."""

    collection: Collection[dict[str, Any]]
    workspace_id: str
    owner: str
    duration: timedelta
    expires_at: datetime
    watermark: datetime | None

    def renew(self) -> None:
        """Extend the lease; raises LeaseLost if it is no longer ours."""
        expires_at = utc_now() + self.duration
        result = self.collection.update_one(
            {"_id": self.workspace_id, "lease_owner": self.owner},
            {"$set": {"lease_expires_at": expires_at}},
        )
        if result.matched_count != 1:
            raise LeaseLost(f"the lease on workspace {self.workspace_id} expired and was taken by another run")
        self.expires_at = expires_at

    def renew_if_half_spent(self) -> None:
        if utc_now() >= self.expires_at - self.duration / 2:
            self.renew()

    def advance_watermark(self, to: datetime, *, succeeded: bool) -> None:
        """Move the watermark, only while we still own the lease and nobody moved it meanwhile."""
        now = utc_now()
        changes: dict[str, Any] = {"watermark": to, "updated_at": now}
        if succeeded:
            changes["last_success_at"] = now
        result = self.collection.update_one(
            {"_id": self.workspace_id, "lease_owner": self.owner, "watermark": self.watermark},
            {"$set": changes},
        )
        if result.matched_count != 1:
            raise LeaseLost(f"the lease on workspace {self.workspace_id} was lost before its watermark could move")
        self.watermark = to

    def release(self) -> None:
        # Conditional: never release a lease that expired and now belongs to another run.
        self.collection.update_one(
            {"_id": self.workspace_id, "lease_owner": self.owner},
            {"$set": {"lease_owner": None, "lease_expires_at": None, "updated_at": utc_now()}},
        )


def acquire_lease(
    collection: Collection[dict[str, Any]], workspace_id: str, owner: str, duration: timedelta
) -> Lease | None:
    """Take the workspace's lease, or return None if another run holds an unexpired one."""
    now = utc_now()
    expires_at = now + duration
    try:
        document = collection.find_one_and_update(
            {
                "_id": workspace_id,
                "$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}],
            },
            {
                "$set": {"lease_owner": owner, "lease_expires_at": expires_at, "lease_acquired_at": now},
                "$setOnInsert": {"watermark": None, "created_at": now},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        return None
    if document is None or document.get("lease_owner") != owner:
        return None
    watermark = document.get("watermark")
    return Lease(
        collection=collection,
        workspace_id=workspace_id,
        owner=owner,
        duration=duration,
        expires_at=expires_at,
        watermark=_as_utc(watermark) if isinstance(watermark, datetime) else None,
    )


def read_watermark(collection: Collection[dict[str, Any]], workspace_id: str) -> datetime | None:
    document = collection.find_one({"_id": workspace_id}, {"watermark": 1})
    watermark = (document or {}).get("watermark")
    return _as_utc(watermark) if isinstance(watermark, datetime) else None
