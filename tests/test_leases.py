"""Leases and windows (src/wa_export/store/export_state.py) against the real test MongoDB.

The end-to-end tests show runs skipping each other; these pin down each rule
of the lease itself, including the server behaviour it relies on (a contested
upsert fails with DuplicateKeyError) and a lease that really expires by the
clock, not by a test editing `lease_expires_at`.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError

from wa_export.clock import utc_now
from wa_export.store.export_state import (
    Lease,
    LeaseLost,
    Window,
    acquire_lease,
    scheduled_window,
)

LONG = timedelta(minutes=15)
SHORT = timedelta(milliseconds=500)


@pytest.fixture
def state(mongo_db: Any) -> Collection[dict[str, Any]]:
    return mongo_db.export_state


def _new_workspace() -> str:
    return str(ObjectId())


def _take(state: Collection[dict[str, Any]], workspace_id: str, owner: str, duration: timedelta = LONG) -> Lease:
    lease = acquire_lease(state, workspace_id, owner, duration)
    assert lease is not None, f"{owner} could not take the lease on {workspace_id}"
    return lease


def _expire_by_the_clock(lease: Lease) -> None:
    delay = (lease.expires_at - datetime.now(UTC)).total_seconds() + 0.05
    if delay > 0:
        time.sleep(delay)


def test_second_acquire_on_a_new_workspace_is_refused(state):
    workspace_id = _new_workspace()
    first = _take(state, workspace_id, "run-a")
    assert first.owner == "run-a" and first.watermark is None
    assert first.expires_at > utc_now() + LONG - timedelta(seconds=5)

    assert acquire_lease(state, workspace_id, "run-b", LONG) is None
    assert acquire_lease(state, workspace_id, "run-a", LONG) is None, "not even the owner takes it twice"
    [document] = list(state.find({"_id": workspace_id}))
    assert document["lease_owner"] == "run-a" and document["watermark"] is None


def test_contested_upsert_raises_duplicate_key_on_this_server(state):
    """The server behaviour acquire_lease relies on: the held lease does not match the filter, so the
    upsert tries to insert a second document with the same _id, which must fail."""
    workspace_id = _new_workspace()
    _take(state, workspace_id, "run-a")
    now = utc_now()
    with pytest.raises(DuplicateKeyError):
        state.find_one_and_update(
            {"_id": workspace_id, "$or": [{"lease_expires_at": None}, {"lease_expires_at": {"$lte": now}}]},
            {"$set": {"lease_owner": "run-b", "lease_expires_at": now + LONG}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    assert state.count_documents({"_id": workspace_id}) == 1


def test_a_lease_expires_by_the_clock_and_another_owner_takes_it(state):
    workspace_id = _new_workspace()
    first = _take(state, workspace_id, "run-a", SHORT)
    assert acquire_lease(state, workspace_id, "run-b", LONG) is None, "held until it expires"
    _expire_by_the_clock(first)
    second = _take(state, workspace_id, "run-b", LONG)
    document = state.find_one({"_id": workspace_id})
    assert document["lease_owner"] == "run-b"
    assert document["lease_expires_at"].replace(tzinfo=UTC) == second.expires_at
    assert state.count_documents({}) == 1


def test_a_stale_owner_can_neither_renew_nor_move_the_watermark_nor_release(state):
    workspace_id = _new_workspace()
    stale = _take(state, workspace_id, "run-a", SHORT)
    start = utc_now() - timedelta(minutes=15)
    stale.advance_watermark(start, succeeded=False)  # pins the first window while still the owner
    assert stale.watermark == start
    _expire_by_the_clock(stale)
    current = _take(state, workspace_id, "run-b", LONG)
    assert current.watermark == start, "the new owner continues from the stored watermark"

    with pytest.raises(LeaseLost):
        stale.renew()
    with pytest.raises(LeaseLost):
        stale.advance_watermark(utc_now(), succeeded=True)
    stale.release()  # conditional: a no-op for a lease that is no longer ours

    document = state.find_one({"_id": workspace_id})
    assert document["lease_owner"] == "run-b"
    assert document["lease_expires_at"].replace(tzinfo=UTC) == current.expires_at
    assert document["watermark"].replace(tzinfo=UTC) == start
    assert acquire_lease(state, workspace_id, "run-c", LONG) is None, "run-b's lease is still held"

    # The real owner is unaffected by all of that.
    current.renew()
    end = utc_now()
    current.advance_watermark(end, succeeded=True)
    current.release()
    document = state.find_one({"_id": workspace_id})
    assert document["lease_owner"] is None and document["lease_expires_at"] is None
    assert document["watermark"].replace(tzinfo=UTC) == end
    assert _take(state, workspace_id, "run-c").watermark == end


def test_the_watermark_only_moves_from_the_value_the_owner_read(state):
    workspace_id = _new_workspace()
    lease = _take(state, workspace_id, "run-a")
    moved = utc_now() - timedelta(minutes=1)
    state.update_one({"_id": workspace_id}, {"$set": {"watermark": moved}})  # someone else moved it
    with pytest.raises(LeaseLost):
        lease.advance_watermark(utc_now(), succeeded=True)
    assert state.find_one({"_id": workspace_id})["watermark"].replace(tzinfo=UTC) == moved


def test_scheduled_window_first_and_later():
    now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
    first = scheduled_window(None, now, interval_minutes=15, lag_seconds=30)
    end = now - timedelta(seconds=30)
    assert first == Window(end - timedelta(minutes=15), end)
    assert not first.is_empty

    watermark = datetime(2026, 3, 1, 9, 17, 3, 123000, tzinfo=UTC)
    later = scheduled_window(watermark, now, interval_minutes=15, lag_seconds=30)
    assert later == Window(watermark, end), "a later window starts exactly at the watermark, however old"

    naive = scheduled_window(watermark.replace(tzinfo=None), now, interval_minutes=15, lag_seconds=30)
    assert naive.start == watermark and naive.start.tzinfo is not None, "a stored naive time is UTC"

    caught_up = scheduled_window(end, now, interval_minutes=15, lag_seconds=30)
    assert caught_up.is_empty
