"""What the export sends to MongoDB (issue 2 #11, issue 5 #4), observed with a pymongo command listener."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from pymongo import MongoClient, monitoring

from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.export.run import ExportRequest, run_export
from wa_export.settings import load_settings
from wa_export.store.connection import Store


class CommandLog(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[tuple[str, str, dict[str, Any]]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = dict(event.command)
        collection = command.get(event.command_name)
        self.commands.append((event.command_name, collection if isinstance(collection, str) else "", command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        return None

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


def _run_observed(mongo_db, make_env, tmp_path, monkeypatch, workspaces: int, messages_each: int):
    now = utcnow()
    env: dict[str, str] = {}
    for number in range(workspaces):
        workspace_id = add_workspace(mongo_db, f"Observed {number}")
        chat_ids = [add_chat(mongo_db, workspace_id, customer_phone=f"+49151000{c}") for c in range(2)]
        add_messages(mongo_db, chat_ids[0], [{"content": f"{number}-{i}", "timestamp": now - timedelta(minutes=3)}
                                             for i in range(messages_each)])
        env[f"WORKSPACE_{workspace_id}_EMAIL"] = f"o{number}@observed.test"
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env(**env))
    log = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[log])
    try:
        result = run_export(settings, Store(client, settings), ExportRequest())
    finally:
        client.close()
    assert result.exit_code == 0, result.summary()
    return log.commands


def _message_reads(commands):
    return [(name, command) for name, collection, command in commands
            if collection == "messages" and name in ("find", "aggregate", "count", "distinct", "getMore")]


def test_messages_queries_are_bounded_and_never_lookup(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    # Without a timestamp-led index every read of messages is a find bounded by
    # a timestamp range AND the workspace's chats; the orphan count is skipped.
    commands = _run_observed(mongo_db, make_env, tmp_path, monkeypatch, workspaces=3, messages_each=4)
    reads = _message_reads(commands)
    assert reads, "the export never read messages"
    for name, _, command in commands:
        assert "$lookup" not in repr(command), f"{name} uses $lookup"
    for name, command in reads:
        assert name == "find", f"unexpected {name} on messages: {command}"
        criteria = command["filter"]
        assert set(criteria["timestamp"]) == {"$gte", "$lt"}
        assert criteria["chat_id"]["$in"], "find on messages not bounded by the workspace's chats"
        assert command["sort"] == {"timestamp": 1, "_id": 1}
    assert len(reads) == 3  # one per workspace


def test_orphan_count_runs_only_on_a_timestamp_index(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    # With {timestamp: 1} the run adds one index-bounded aggregate to count
    # messages whose chat is gone; still no read of messages without a range.
    mongo_db.messages.create_index([("timestamp", 1)])
    commands = _run_observed(mongo_db, make_env, tmp_path, monkeypatch, workspaces=2, messages_each=2)
    reads = _message_reads(commands)
    aggregates = [command for name, command in reads if name == "aggregate"]
    assert len(aggregates) == 1
    assert set(aggregates[0]["pipeline"][0]["$match"]["timestamp"]) == {"$gte", "$lt"}
    assert all(set(command["filter"]["timestamp"]) == {"$gte", "$lt"} for name, command in reads if name == "find")


def test_commands_per_workspace_are_a_small_constant(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    few = _run_observed(mongo_db, make_env, tmp_path, monkeypatch, workspaces=2, messages_each=2)
    mongo_db.client.drop_database(mongo_db.name)
    many = _run_observed(mongo_db, make_env, tmp_path, monkeypatch, workspaces=6, messages_each=2)
    per_workspace = (len(many) - len(few)) / 4
    # lease, pin watermark, chats, messages, renew, export log, watermark, release
    assert per_workspace <= 9, Counter((name, collection) for name, collection, _ in many)
    assert not any(name == "getMore" for name, _, _ in many)  # small windows fit the first batch
