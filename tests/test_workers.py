"""Scaling out: `--workers N`, several independent processes, and batched reads.

N processes over one database must export every message exactly once: the
per-workspace leases and watermarks decide, whatever the processes are.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from pymongo import MongoClient

from helpers import (
    CommandLog,
    lease_skips,
    mailed_rows,
    parse_json,
    run_cli_processes_at_once,
    run_export,
    runs_overlapped,
    smtp_env,
)
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.errors import ExitCode
from wa_export.export import plan
from wa_export.export.run import ExportRequest
from wa_export.export.workers import (
    WorkerOutcome,
    WorkersResult,
    WorkerUsageError,
    check_request,
    parse_worker_slot,
    slot_share,
)
from wa_export.settings import load_settings
from wa_export.store import connection as mongo
from wa_export.store.arrivals import NEWEST_PROBED


def _seed(db: Any, workspaces: int, messages_each: int) -> tuple[dict[str, str], set[str]]:
    """Workspaces with two chats each; returns (email variables, every message content)."""
    env: dict[str, str] = {}
    contents: set[str] = set()
    base = utcnow() - timedelta(minutes=5)
    for number in range(workspaces):
        workspace_id = add_workspace(db, f"Parallel {number}")
        chats = [add_chat(db, workspace_id, customer_phone=f"+4915100{number:02d}{c}") for c in range(2)]
        for c, chat_id in enumerate(chats):
            specs = [
                {"content": f"w{number}-c{c}-m{i}", "timestamp": base + timedelta(milliseconds=10 * i + c)}
                for i in range(messages_each)
            ]
            add_messages(db, chat_id, specs)
            contents.update(spec["content"] for spec in specs)
        env[f"WORKSPACE_{workspace_id}_EMAIL"] = f"team{number}@parallel.test"
    return env, contents


def _mailed_contents(smtp_server: Any) -> Counter[str]:
    return Counter(row[2] for message in smtp_server.messages for row in mailed_rows(message))


@pytest.mark.gated_smtp(3)
def test_workers_3_export_every_message_exactly_once(mongo_db, make_env, cli_process, gated_smtp):
    env, contents = _seed(mongo_db, workspaces=7, messages_each=6)
    full_env = make_env(**smtp_env(gated_smtp), **env)
    result = cli_process(["export", "--workers", "3", "--json"], env=full_env)
    assert result.returncode == 0, result.stdout + result.stderr
    # Each worker's first mail was held until all three workers were connected: they ran at once.
    assert not gated_smtp.gate_timed_out, "the three workers never had their SMTP connections open at the same time"
    document = parse_json(result)

    mailed = _mailed_contents(gated_smtp)
    assert set(mailed) == contents
    assert max(mailed.values()) == 1, [text for text, n in mailed.items() if n > 1]

    assert document["workers"] == 3 and document["exit_code"] == 0 and document["ok"] is True
    assert [run["slot"] for run in document["runs"]] == [0, 1, 2]
    assert all(run["exit_code"] == 0 and run["run_id"] for run in document["runs"])
    assert len({run["run_id"] for run in document["runs"]}) == 3
    ids = [ws["workspace_id"] for ws in document["workspaces"]]
    assert len(ids) == len(set(ids)) == 7  # each workspace attempted by exactly one worker
    assert Counter(ws["outcome"] for ws in document["workspaces"]) == {"completed": 7}
    assert document["message_count"] == len(contents) == sum(ws["message_count"] for ws in document["workspaces"])
    assert "3 workers" in document["summary"] and "7 emailed" in document["summary"]
    # One summary event per worker process.
    assert mongo_db.system_logs.count_documents({"kind": "export_run"}) == 3

    # The watermarks moved: the next run (workers again) sends nothing new.
    again = cli_process(["export", "--workers", "3", "--json"], env=full_env)
    assert again.returncode == 0, again.stderr
    assert parse_json(again)["message_count"] == 0
    assert sum(_mailed_contents(gated_smtp).values()) == len(contents)


@pytest.mark.gated_smtp(3)
def test_independent_processes_share_one_run(mongo_db, make_env, tmp_path, gated_smtp):
    """Three `wa-export export` at once (three hosts, or overlapping cron runs): leases split the work."""
    env, contents = _seed(mongo_db, workspaces=6, messages_each=5)
    # Each run's first mail is held until all three runs are connected (gated_smtp): they provably overlap.
    full_env = make_env(**smtp_env(gated_smtp), **env)
    documents = run_cli_processes_at_once([["export", "--json"]] * 3, full_env, tmp_path)
    assert not gated_smtp.gate_timed_out, "the three runs never had their SMTP connections open at the same time"
    assert runs_overlapped(documents)
    assert all(doc["message_count"] > 0 for doc in documents), "every run exported something"
    assert lease_skips(documents), "runs met each other's leases"

    mailed = _mailed_contents(gated_smtp)
    assert set(mailed) == contents and max(mailed.values()) == 1
    outcomes = Counter(ws["outcome"] for doc in documents for ws in doc["workspaces"])
    assert outcomes["completed"] == 6, outcomes  # each workspace emailed by exactly one process
    assert set(outcomes) <= {"completed", "skipped", "no_messages"}
    assert sum(doc["message_count"] for doc in documents) == len(contents)


def test_workers_reject_manual_runs(cli):
    result = cli(["export", "--workers", "2", "--hours", "1"])
    assert result.returncode == 2
    assert "--workers applies to scheduled runs only" in result.stderr
    for count in ("0", "65"):  # one rule, one sentence, at both ends
        refused = cli(["export", "--workers", count])
        assert refused.returncode == 2 and "--workers must be between 1 and 64" in refused.stderr, refused.stderr


def test_worker_helpers():
    assert slot_share(list(range(7)), (0, 3)) == [0, 3, 6]
    assert slot_share(list(range(7)), (2, 3)) == [2, 5]
    assert sorted(x for k in range(3) for x in slot_share(list(range(7)), (k, 3))) == list(range(7))
    assert slot_share([1, 2], None) == [1, 2]
    assert parse_worker_slot("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "x", "1/0", "1/999"):
        with pytest.raises(WorkerUsageError):
            parse_worker_slot(bad)
    with pytest.raises(WorkerUsageError):
        check_request(2, is_manual=True)
    check_request(1, is_manual=True)
    assert ExitCode.worst([0, 1, 0]) == 1
    assert ExitCode.worst([1, 2, 0]) == 2
    assert ExitCode.worst([2, 3, 1]) == 3
    assert ExitCode.worst([0, -15]) == 1  # killed by a signal
    assert ExitCode.worst([]) == 0


def test_merged_run_anomalies_take_each_runs_count_once_and_stay_plain_json():
    children = [WorkerOutcome(slot, 0, {"run_anomalies": {"orphaned_message": 3}}) for slot in range(2)]
    merged = WorkersResult(2, 0.0, 1.0, children).run
    assert merged.run_anomalies == {"orphaned_message": 3}  # one counting pass per run: the maximum, not the sum
    assert merged.as_dict()["run_anomalies"] == {"orphaned_message": 3}


# ----------------------------------------------------------------------------- batched reads (getMore)


def test_one_getmore_per_batch_and_every_messages_query_bounded(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    batch, total = 7, 50
    monkeypatch.setattr(mongo, "MESSAGE_BATCH_SIZE", batch)
    monkeypatch.setattr(plan, "PASS_DOCUMENT_BYTES", 0)  # a window past the pass's budget: streamed by its delivery
    workspace_id = add_workspace(mongo_db, "Batched")
    chat_id = add_chat(mongo_db, workspace_id)
    base = utcnow() - timedelta(minutes=4)
    add_messages(
        mongo_db, chat_id, [{"content": f"b{i}", "timestamp": base + timedelta(milliseconds=i)} for i in range(total)]
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "b@batched.test"}))
    log = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[log])
    try:
        result = run_export(settings, mongo.Store(client, settings), ExportRequest())
    finally:
        client.close()
    assert result.exit_code == 0, result.summary()
    assert result.message_count == total

    finds = log.bodies("find", "messages")
    get_mores = log.bodies("getMore", "messages")
    # The workspace's window is one find, streamed in batches of MESSAGE_BATCH_SIZE.
    [window] = [command for command in finds if "chat_id" in command["filter"]]
    assert window["batchSize"] == batch
    assert set(window["filter"]["_id"]) == {"$gte", "$lt"}
    assert len(get_mores) == math.ceil(total / batch) - 1, len(get_mores)
    assert all(command["batchSize"] == batch for command in get_mores)
    # Nothing else reads `messages` without an arrival range, except the two probes of the
    # _id index: its newest few entries and its lowest one (is every arrival key an ObjectId?).
    for command in finds:
        if command["filter"]:
            assert set(command["filter"]["_id"]) == {"$gte", "$lt"}, command
        else:
            assert command["limit"] in (1, NEWEST_PROBED), command
    assert len(finds) == 4  # the pass, the window, two probes
    mailed = [row[2] for message in smtp_server.messages for row in mailed_rows(message)]
    assert mailed == [f"b{i}" for i in range(total)]


def test_plain_workers_output_names_each_workspace_and_its_outcome(mongo_db, make_env, cli_process, smtp_server):
    # Under cron the children's output is captured: the parent must still say which workspace failed and why.
    env, _ = _seed(mongo_db, workspaces=2, messages_each=2)
    broken = add_workspace(mongo_db, "Broken address")
    add_messages(mongo_db, add_chat(mongo_db, broken), [{"content": "held back"}])
    full_env = make_env(**smtp_env(smtp_server), **env, **{f"WORKSPACE_{broken}_EMAIL": "not-an-address"})
    result = cli_process(["export", "--workers", "2"], env=full_env)
    assert result.returncode == ExitCode.FAILED, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    failed = [line for line in lines if f"workspace={broken}" in line]
    assert len(failed) == 1 and "outcome=failed" in failed[0] and "WORKSPACE_" in failed[0], result.stdout
    for workspace_id in (name.split("_")[1] for name in env):
        assert any(f"workspace={workspace_id}" in line and "outcome=completed" in line for line in lines)
