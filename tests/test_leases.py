"""Leases and cursors (store/state.py) against the real test MongoDB.

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

from wa_export.clock import DatabaseClock, utc_now
from wa_export.store.arrivals import ArrivalKey, time_of
from wa_export.store.state import FirstCursor, Lease, LeaseLost, acquire_lease

LONG = timedelta(minutes=15)
SHORT = timedelta(milliseconds=500)


@pytest.fixture
def state(mongo_db: Any) -> Collection[dict[str, Any]]:
    return mongo_db.export_state


def _new_workspace() -> str:
    return str(ObjectId())


def _clock(state: Collection[dict[str, Any]]) -> DatabaseClock:
    """The database server's clock, as a run reads it."""
    return DatabaseClock(state.database.client.admin.command("hello")["localTime"].replace(tzinfo=UTC))


def _acquire(
    state: Collection[dict[str, Any]],
    workspace_id: str,
    owner: str,
    duration: timedelta = LONG,
    first: FirstCursor | None = None,
) -> Lease | None:
    # The collection's database stands in for the Store: acquire_lease only reaches its `export_state`.
    return acquire_lease(state.database, workspace_id, owner, duration, _clock(state), first)


def _take(
    state: Collection[dict[str, Any]],
    workspace_id: str,
    owner: str,
    duration: timedelta = LONG,
    first: FirstCursor | None = None,
) -> Lease:
    lease = _acquire(state, workspace_id, owner, duration, first)
    assert lease is not None, f"{owner} could not take the lease on {workspace_id}"
    return lease


KEY = ArrivalKey("_id")


def _expire_by_the_clock(lease: Lease) -> None:
    delay = (lease.expires_at - datetime.now(UTC)).total_seconds() + 0.05
    if delay > 0:
        time.sleep(delay)


def test_second_acquire_on_a_new_workspace_is_refused(state):
    workspace_id = _new_workspace()
    start = KEY.at(utc_now() - timedelta(minutes=15))
    first = _take(state, workspace_id, "run-a", first=FirstCursor(start, "first_interval"))
    assert first.owner == "run-a" and first.cursor == start and first.new_cursor_source == "first_interval"
    assert first.expires_at > utc_now() + LONG - timedelta(seconds=5)

    assert _acquire(state, workspace_id, "run-b") is None
    assert _acquire(state, workspace_id, "run-a") is None, "not even the owner takes it twice"
    [document] = list(state.find({"_id": workspace_id}))
    assert document["lease_owner"] == "run-a" and document["cursor"] == start


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
    assert _acquire(state, workspace_id, "run-b") is None, "held until it expires"
    _expire_by_the_clock(first)
    second = _take(state, workspace_id, "run-b", LONG)
    document = state.find_one({"_id": workspace_id})
    assert document["lease_owner"] == "run-b"
    assert document["lease_expires_at"].replace(tzinfo=UTC) == second.expires_at
    assert state.count_documents({}) == 1


def test_a_stale_owner_can_neither_renew_nor_move_the_cursor_nor_release(state):
    workspace_id = _new_workspace()
    start = KEY.at(utc_now() - timedelta(minutes=15))
    # The first cursor is pinned by the lease itself, while run-a is still the owner.
    stale = _take(state, workspace_id, "run-a", SHORT, FirstCursor(start, "first_interval"))
    assert stale.cursor == start
    _expire_by_the_clock(stale)
    current = _take(state, workspace_id, "run-b", LONG)
    assert current.cursor == start, "the new owner continues from the stored cursor"

    with pytest.raises(LeaseLost):
        stale.renew()
    with pytest.raises(LeaseLost):
        stale.delivered(KEY.at(utc_now()), None, possible_duplicate=False, in_flight=None, release=True)
    stale.release()  # conditional: a no-op for a lease that is no longer ours

    document = state.find_one({"_id": workspace_id})
    assert document["lease_owner"] == "run-b"
    assert document["lease_expires_at"].replace(tzinfo=UTC) == current.expires_at
    assert document["cursor"] == start
    assert _acquire(state, workspace_id, "run-c") is None, "run-b's lease is still held"

    # The real owner is unaffected by all of that.
    current.renew()
    end = KEY.at(utc_now())
    current.delivered(end, None, possible_duplicate=False, in_flight=None, release=True)
    document = state.find_one({"_id": workspace_id})
    assert document["lease_owner"] is None and document["lease_expires_at"] is None
    assert document["cursor"] == end and document["cursor_source"] == "export"
    assert document["consecutive_failures"] == 0 and document["in_flight"] is None
    assert _take(state, workspace_id, "run-c").cursor == end


def test_the_cursor_only_moves_from_the_value_the_owner_read(state):
    workspace_id = _new_workspace()
    lease = _take(
        state, workspace_id, "run-a", first=FirstCursor(KEY.at(utc_now() - timedelta(hours=1)), "first_interval")
    )
    moved = KEY.at(utc_now() - timedelta(minutes=1))
    state.update_one({"_id": workspace_id}, {"$set": {"cursor": moved}})  # someone else moved it
    with pytest.raises(LeaseLost):
        lease.delivered(KEY.at(utc_now()), None, possible_duplicate=False, in_flight=None, release=True)
    assert state.find_one({"_id": workspace_id})["cursor"] == moved


def test_an_old_document_without_a_cursor_gets_its_first_one_under_the_lease(state):
    workspace_id = _new_workspace()
    watermark = utc_now() - timedelta(minutes=20)
    state.insert_one({"_id": workspace_id, "watermark": watermark, "lease_owner": None, "lease_expires_at": None})
    first = FirstCursor(KEY.at(watermark), "legacy_watermark")
    lease = _take(state, workspace_id, "run-a", first=first)
    assert lease.cursor == first.key and lease.new_cursor_source == "legacy_watermark"
    document = state.find_one({"_id": workspace_id})
    assert document["cursor"] == first.key and document["cursor_source"] == "legacy_watermark"
    assert document["watermark"].replace(tzinfo=UTC) == watermark, "the old watermark is read, never rewritten"


def test_arrival_keys_of_times():
    moment = datetime(2026, 3, 1, 9, 17, 3, 123000, tzinfo=UTC)
    assert KEY.at(moment) == ObjectId.from_datetime(moment)
    assert time_of(KEY.at(moment)) == moment.replace(microsecond=0), "ObjectIds hold whole seconds"
    dated = ArrivalKey("created_at")
    assert dated.at(moment) == moment and time_of(moment.replace(tzinfo=None)) == moment
    assert KEY.usable(ObjectId()) and not KEY.usable("65f0c0ffee0000000000beef")
    assert dated.usable(moment) and not dated.usable(None)
