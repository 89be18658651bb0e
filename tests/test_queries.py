"""What a scheduled run sends to MongoDB, seen by a command listener.

The library's export entry runs in this process with a client that records
every command it sends, and the documents every reply carries: command counts
are deterministic, timings are never asserted.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

from helpers import CommandLog, mailed_contents, run_export
from seeding import (
    add_chat,
    add_messages,
    add_workspace,
    arrival_id,
    settle_arrivals,
    utcnow,
)
from wa_export.export import plan
from wa_export.export.plan import horizon
from wa_export.export.run import ExportRequest
from wa_export.settings import load_settings
from wa_export.store.arrivals import NEWEST_PROBED
from wa_export.store.connection import MESSAGE_PROJECTION, Store

READS = ("find", "aggregate", "count", "distinct", "getMore")
HEX_ID = re.compile(r"[0-9a-f]{24}")


def _observed_run(make_env, tmp_path, monkeypatch, env: dict[str, str], request: ExportRequest | None = None):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env(**env))
    log = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[log])
    try:
        result = run_export(settings, Store(client, settings), request or ExportRequest())
    finally:
        client.close()
    assert result.exit_code == 0, result.summary()
    return result, log


def _seed_workspaces(
    db, count: int, with_messages: int, messages_each: int = 2
) -> tuple[list[ObjectId], dict[str, str]]:
    """`count` active workspaces in one insert; the first `with_messages` get a chat and a few messages."""
    ids = [ObjectId() for _ in range(count)]
    db.workspaces.insert_many([{"_id": ws, "name": f"Tenant {n:04d}", "status": "active"} for n, ws in enumerate(ids)])
    now = utcnow()
    for number, workspace_id in enumerate(ids[:with_messages]):
        chat_id = add_chat(db, workspace_id, customer_phone=f"+49151000{number:04d}")
        add_messages(
            db,
            chat_id,
            [{"content": f"{number}-{i}", "timestamp": now - timedelta(minutes=3)} for i in range(messages_each)],
        )
    return ids, {f"WORKSPACE_{ws}_EMAIL": f"t{n}@tenant.test" for n, ws in enumerate(ids)}


def _message_reads(commands):
    return [(name, command) for name, collection, command in commands if collection == "messages" and name in READS]


# --- every messages query is bounded --------------------------------------------------------


@pytest.mark.parametrize("pass_keeps_messages", [True, False])
def test_every_messages_query_is_bounded_by_the_arrival_range_and_the_workspaces_chats(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server, pass_keeps_messages
):
    if not pass_keeps_messages:  # past the pass's budget every delivery reads its own window
        monkeypatch.setattr(plan, "PASS_DOCUMENT_BYTES", 0)
    ids, env = _seed_workspaces(mongo_db, 4, with_messages=3, messages_each=4)
    extra_chat = add_chat(mongo_db, ids[0], customer_phone="+4915100999")  # a second chat, without new messages
    chats_of = {str(doc["_id"]): str(doc["workspace_id"]) for doc in mongo_db.chats.find()}
    result, log = _observed_run(make_env, tmp_path, monkeypatch, env)
    assert result.count("completed") == 3
    for name, _, command in log.commands:
        assert "$lookup" not in repr(command), f"{name} uses $lookup"
    reads = _message_reads(log.commands)
    assert all(name == "find" for name, _ in reads), [name for name, _ in reads]
    end = ObjectId.from_datetime(result.started_at)
    shapes: Counter[str] = Counter()
    for _, command in reads:
        criteria = command["filter"]
        if not criteria:  # the arrival key's health: the newest few _ids and the lowest one, on the _id index
            assert list(command["sort"]) == ["_id"] and command["projection"] == {"_id": 1}
            assert (command["limit"], command["sort"]["_id"]) in {(NEWEST_PROBED, -1), (1, 1)}, command
            shapes["key probe"] += 1
            continue
        bounds = criteria["_id"]
        assert set(bounds) == {"$gte", "$lt"}, criteria
        assert isinstance(bounds["$gte"], ObjectId) and isinstance(bounds["$lt"], ObjectId)
        assert bounds["$lt"] <= end and bounds["$gte"] >= ObjectId.from_datetime(
            result.started_at - horizon(15) - timedelta(minutes=1)
        ), "no read reaches further back than the horizon"
        if set(criteria) == {"_id"}:  # the one shared pass: the arrival range on the _id index
            assert command["sort"] == {"_id": 1}
            assert command["projection"] == {**MESSAGE_PROJECTION, "_id": 1}, "what a row needs, nothing more"
            shapes["pass"] += 1
        else:
            assert set(criteria) == {"_id", "chat_id"}, criteria
            chat_ids = criteria["chat_id"]["$in"]
            owners = {chats_of[str(chat_id)] for chat_id in chat_ids}
            assert len(owners) == 1, "a workspace's query names only its own chats"
            assert str(extra_chat) not in {str(chat_id) for chat_id in chat_ids}, "only chats seen in the window"
            assert command["sort"] == {"timestamp": 1, "_id": 1}
            shapes["workspace"] += 1
    assert shapes == (
        {"pass": 1, "key probe": 2} if pass_keeps_messages else {"pass": 1, "workspace": 3, "key probe": 2}
    )


def test_orphans_are_counted_by_the_pass_without_any_other_query(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    _, env = _seed_workspaces(mongo_db, 2, with_messages=2)
    mongo_db.messages.insert_one(
        {
            "_id": arrival_id(utcnow() - timedelta(minutes=1)),
            "chat_id": ObjectId(),
            "direction": "incoming",
            "content": "orphan",
            "timestamp": utcnow(),
        }
    )
    settle_arrivals()
    result, log = _observed_run(make_env, tmp_path, monkeypatch, env)
    assert result.orphaned_messages == 1 and result.anomaly_totals()["orphaned_message"] == 1
    assert not [name for name, _ in _message_reads(log.commands) if name != "find"]
    assert mongo_db.messages.index_information().keys() == {"_id_"}, "no timestamp index needed"


def test_commands_per_workspace_are_a_small_constant(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    _, env = _seed_workspaces(mongo_db, 2, with_messages=2)
    _, few = _observed_run(make_env, tmp_path, monkeypatch, env)
    mongo_db.client.drop_database(mongo_db.name)
    _, env = _seed_workspaces(mongo_db, 6, with_messages=6)
    _, many = _observed_run(make_env, tmp_path, monkeypatch, env)
    per_workspace = (len(many.commands) - len(few.commands)) / 4
    # lease, intent, sending log, completed log, cursor + release: the messages came with the pass
    assert per_workspace <= 5, Counter((name, collection) for name, collection, _ in many.commands)
    assert not any(name == "getMore" for name, _, _ in many.commands)  # small windows fit the first batch
    message_finds = [
        command
        for name, collection, command in many.commands
        if name == "find" and collection == "messages" and command.get("filter")
    ]
    assert len(message_finds) == 1, "one pass, no query per workspace (the key probes have no filter)"


def test_messages_past_the_pass_budget_are_read_by_their_delivery(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    """The pass keeps a bounded amount of messages; a workspace past it reads its own window, nothing is missed."""
    _, env = _seed_workspaces(mongo_db, 4, with_messages=4, messages_each=3)
    monkeypatch.setattr(plan, "PASS_DOCUMENT_BYTES", 3_700)  # room for 9 of the 12 messages (400 bytes each)
    result, log = _observed_run(make_env, tmp_path, monkeypatch, env)
    assert result.count("completed") == 4 and result.message_count == 12
    own_reads = [
        command
        for name, collection, command in log.commands
        if name == "find" and collection == "messages" and "chat_id" in command.get("filter", {})
    ]
    assert 1 <= len(own_reads) < 4, "the workspaces within the budget did not query their messages again"
    contents = sorted(text for mail in smtp_server.messages for text in mailed_contents([mail]))
    assert contents == sorted(f"{number}-{index}" for number in range(4) for index in range(3))


def test_threads_started_per_run_do_not_grow_with_busy_workspaces(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    """Lease renewals and SMTP deadlines run on long-lived threads, not on one new thread per workspace or step."""
    started: list[str] = []
    original_start = threading.Thread.start

    def counting_start(self: threading.Thread) -> None:
        started.append(self.name)
        original_start(self)

    monkeypatch.setattr(threading.Thread, "start", counting_start)
    _, env = _seed_workspaces(mongo_db, 2, with_messages=2)
    first, _ = _observed_run(make_env, tmp_path, monkeypatch, env)  # starts whatever is started once per process
    mongo_db.client.drop_database(mongo_db.name)
    _, env = _seed_workspaces(mongo_db, 2, with_messages=2)
    started.clear()
    few, _ = _observed_run(make_env, tmp_path, monkeypatch, env)
    few_threads = list(started)
    mongo_db.client.drop_database(mongo_db.name)
    _, env = _seed_workspaces(mongo_db, 6, with_messages=6)
    started.clear()
    many, _ = _observed_run(make_env, tmp_path, monkeypatch, env)
    assert first.count("completed") == few.count("completed") == 2 and many.count("completed") == 6
    assert len(started) == len(few_threads), (few_threads, started)


# --- cost per workspace: idle ones nothing, busy ones a few commands ---------------------------


def _per_workspace_mentions(commands, workspace_ids: set[str]) -> list[tuple[str, str]]:
    """Commands that name a single one of `workspace_ids` (bulk commands name hundreds)."""
    found = []
    for name, collection, command in commands:
        mentioned = set(HEX_ID.findall(repr(command))) & workspace_ids
        if len(mentioned) == 1:
            found.append((name, collection))
    return found


def test_idle_workspaces_cost_no_command_and_busy_ones_a_few(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    ids, env = _seed_workspaces(mongo_db, 300, with_messages=5)
    idle = {str(ws) for ws in ids[5:]}
    first, log = _observed_run(make_env, tmp_path, monkeypatch, env)
    assert first.count("completed") == 5 and first.count("no_messages") == 295
    assert _per_workspace_mentions(log.commands, idle) == [], "no per-workspace command for an idle workspace"
    assert len(log.commands) <= 15 + 8 * 5, Counter((name, collection) for name, collection, _ in log.commands)
    assert mongo_db.export_state.count_documents({}) == 300, "every cursor was created, in bulk"

    # A later run: new messages for the same five, the rest still idle.
    for number, workspace_id in enumerate(ids[:5]):
        chat = mongo_db.chats.find_one({"workspace_id": workspace_id})
        add_messages(mongo_db, chat["_id"], [{"content": f"later-{number}", "timestamp": utcnow()}])
    before = {doc["_id"]: doc["cursor"] for doc in mongo_db.export_state.find({"_id": {"$in": sorted(idle)}})}
    second, log = _observed_run(make_env, tmp_path, monkeypatch, env)
    assert second.count("completed") == 5 and second.message_count == 5
    assert _per_workspace_mentions(log.commands, idle) == []
    assert len(log.commands) <= 15 + 8 * 5, Counter((name, collection) for name, collection, _ in log.commands)
    after = {doc["_id"]: doc["cursor"] for doc in mongo_db.export_state.find({"_id": {"$in": sorted(idle)}})}
    assert all(after[ws] > before[ws] for ws in idle), "idle cursors still advance (in one bulk write)"


def test_a_tenant_with_many_chats_costs_the_chats_with_new_messages(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    workspace_id = add_workspace(mongo_db, "Big Tenant")
    chats = [
        {
            "_id": ObjectId(),
            "workspace_id": workspace_id,
            "phone_number": "+15550001111",
            "customer_phone": f"+49151{number:07d}",
        }
        for number in range(2_000)
    ]
    for offset in range(0, len(chats), 500):
        mongo_db.chats.insert_many(chats[offset : offset + 500])
    busy = [chats[7]["_id"], chats[1_000]["_id"], chats[1_999]["_id"]]
    for chat_id in busy:
        add_messages(
            mongo_db,
            chat_id,
            [{"content": f"{chat_id}-{i}", "timestamp": utcnow() - timedelta(minutes=2)} for i in range(2)],
        )
    result, log = _observed_run(make_env, tmp_path, monkeypatch, {f"WORKSPACE_{workspace_id}_EMAIL": "big@t.test"})
    assert result.count("completed") == 1 and result.message_count == 6
    assert log.returned["chats"] <= len(busy) + 2, log.returned
    assert not any(
        name == "find" and collection == "chats" and "workspace_id" in command.get("filter", {})
        for name, collection, command in log.commands
    ), "never the workspace's chat list"


def test_a_lagging_workspace_is_caught_up_on_its_own_path_without_widening_the_pass(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    ids, env = _seed_workspaces(mongo_db, 2, with_messages=1)
    current, lagging = ids
    _observed_run(make_env, tmp_path, monkeypatch, env)  # every cursor now at the end
    week_ago = utcnow() - timedelta(days=7)
    mongo_db.export_state.update_one({"_id": str(lagging)}, {"$set": {"cursor": ObjectId.from_datetime(week_ago)}})
    chat = add_chat(mongo_db, lagging)
    mongo_db.messages.insert_many(
        [  # arrived three days ago, while its exports were off
            {
                "_id": arrival_id(utcnow() - timedelta(days=3)),
                "chat_id": chat,
                "direction": "incoming",
                "content": f"backlog-{i}",
                "timestamp": utcnow() - timedelta(days=3),
            }
            for i in range(3)
        ]
    )
    current_chat = mongo_db.chats.find_one({"workspace_id": current})["_id"]
    add_messages(mongo_db, current_chat, [{"content": "fresh", "timestamp": utcnow()}])

    result, log = _observed_run(make_env, tmp_path, monkeypatch, env)
    by_id = {ws.workspace_id: ws for ws in result.workspaces}
    assert by_id[str(lagging)].message_count == 3 and by_id[str(current)].message_count == 1
    passes = [
        command
        for name, command in _message_reads(log.commands)
        if name == "find" and set(command["filter"]) == {"_id"}
    ]
    assert len(passes) == 1
    assert passes[0]["filter"]["_id"]["$gte"] > ObjectId.from_datetime(utcnow() - timedelta(hours=1)), (
        "the pass starts at the current workspace's cursor, not the laggard's"
    )
