"""Run-level policies: SMTP failures that doom the run, manual runs over all
workspaces, read preference, time bounds, what proves the schedule is alive, orphan counting."""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId
from pymongo import ReadPreference

from helpers import parse_json
from seeding import (
    add_chat,
    add_messages,
    add_workspace,
    message_doc,
    settle_arrivals,
    utcnow,
)
from wa_export.clock import utc_now
from wa_export.commands.health import check_scheduled_runs
from wa_export.settings import load_settings
from wa_export.store.connection import SERVICE_NAME, Store


def _workspaces_with_messages(db, count: int) -> dict[str, str]:
    env: dict[str, str] = {}
    for number in range(count):
        workspace_id = add_workspace(db, f"Policy {number}")
        add_messages(
            db, add_chat(db, workspace_id), [{"content": f"p{number}", "timestamp": utcnow() - timedelta(minutes=2)}]
        )
        env[f"WORKSPACE_{workspace_id}_EMAIL"] = f"p{number}@policy.test"
    return env


def test_refused_login_is_tried_once_per_run_not_once_per_workspace(mongo_db, make_env, cli, smtp_server):
    env = make_env(SMTP_PASSWORD="wrong-password", **_workspaces_with_messages(mongo_db, 3))
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    document = parse_json(result)
    outcomes = [workspace["outcome"] for workspace in document["workspaces"]]
    assert outcomes == ["failed", "failed", "failed"]
    reasons = [workspace["reason"] for workspace in document["workspaces"]]
    assert sum("not attempted" in reason for reason in reasons) == 2
    assert all("app password" in reason.lower() for reason in reasons)
    assert smtp_server.connection_count == 1  # no lockout-inducing retries
    assert mongo_db.export_logs.count_documents({"status": "failed"}) == 3
    assert "wrong-password" not in result.stdout + result.stderr


def test_manual_run_over_all_workspaces_skips_those_without_address(mongo_db, make_env, cli, smtp_server):
    env_vars = _workspaces_with_messages(mongo_db, 2)
    unaddressed = add_workspace(mongo_db, "No Address")
    result = cli(["export", "--hours", "1", "--json"], env=make_env(**env_vars))
    assert result.returncode == 0, result.stdout + result.stderr
    by_id = {workspace["workspace_id"]: workspace for workspace in parse_json(result)["workspaces"]}
    assert by_id[str(unaddressed)]["outcome"] == "skipped"
    assert len(smtp_server.messages) == 2
    # Named explicitly, the same workspace is a failure the operator must see.
    named = cli(["export", "--hours", "1", "--workspace", str(unaddressed)], env=make_env(**env_vars))
    assert named.returncode == 1 and "no email address configured" in named.stdout


def test_times_out_of_range_are_usage_errors(make_env, cli, smtp_server):
    for args in (["--since", "0001-01-01"], ["--until", "0001-01-01T05:00"], ["--until", "9999-12-31T23:59-05:00"]):
        result = cli(["export", "--dry-run", *args], env=make_env(EXPORT_TIMEZONE="Asia/Tokyo"))
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "out of range" in result.stderr and "Traceback" not in result.stderr


def test_export_state_and_messages_are_read_from_the_primary(make_env, tmp_path, monkeypatch, smtp_server):
    monkeypatch.chdir(tmp_path)
    env = make_env()
    env["MONGODB_URI"] += "&readPreference=secondaryPreferred"
    settings = load_settings(environ=env)
    store = Store.open(settings)
    try:
        assert store.client.read_preference != ReadPreference.PRIMARY  # the URI asked for secondaries
        assert store.export_state.read_preference == ReadPreference.PRIMARY
        assert store.messages.read_preference == ReadPreference.PRIMARY
    finally:
        store.close()


def test_only_full_scheduled_runs_prove_the_schedule_is_alive(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env())
    store = Store.open(settings)
    try:
        event = {"kind": "export_run", "trigger": "scheduled", "timestamp": utc_now(), "failed": 0}
        mongo_db.system_logs.insert_many(
            [
                # In use for hours (not a fresh install, which is only a warning).
                {"kind": "health_check", "service": SERVICE_NAME, "timestamp": utc_now() - timedelta(hours=3)},
                {**event, "moves_watermark": False, "all_workspaces": True},  # --no-email / --dry-run
                {**event, "moves_watermark": True, "all_workspaces": False},  # --workspace X
            ]
        )
        assert check_scheduled_runs(store, settings, utc_now()).status == "failed"
        mongo_db.system_logs.insert_one({**event, "moves_watermark": True, "all_workspaces": True})
        assert check_scheduled_runs(store, settings, utc_now()).status == "ok"
    finally:
        store.close()


def test_orphans_are_counted_by_every_scheduled_run_without_an_extra_index(mongo_db, make_env, cli, smtp_server):
    # The run's one pass over the new arrivals sees every message, so a message
    # whose chat is gone is counted for free: no {timestamp: 1} index, no extra query.
    env = make_env(**_workspaces_with_messages(mongo_db, 1))
    mongo_db.messages.insert_one(message_doc(ObjectId(), content="orphan", timestamp=utcnow() - timedelta(minutes=1)))
    first = cli(["export", "--json"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    document = parse_json(first)
    assert document["orphaned_messages"] == 1 and "1 orphaned_message" in document["summary"]
    assert mongo_db.system_logs.find_one({"kind": "export_run"})["orphaned_messages"] == 1
    assert "timestamp_1" not in mongo_db.messages.index_information()

    settle_arrivals()
    second = cli(["export", "--json"], env=env)  # its window starts after the orphan: counted once
    assert second.returncode == 0, second.stdout + second.stderr
    assert parse_json(second)["orphaned_messages"] == 0
