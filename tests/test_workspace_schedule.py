"""Each workspace on its own schedule: every, hourly, daily@HH:MM[,HH:MM…] or off, on the database clock.

A workspace that is not due costs nothing: no lease, no email, no command of its own; its cursor
stays and its messages wait for the next slot, which delivers them all, once.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from helpers import (
    CommandLog,
    health_checks,
    mailed_contents,
    mailed_rows,
    parse_json,
    run_cli_processes_at_once,
    run_export,
    runs_overlapped,
    smtp_env,
)
from inprocess_cli import run_cli_in_process
from seeding import add_arrived, add_chat, add_messages, add_workspace, utcnow
from wa_export.clock import DatabaseClock as Clock
from wa_export.export.delivery import deliver
from wa_export.export.plan import make_plan
from wa_export.export.results import MailSession, RunContext
from wa_export.export.run import ExportRequest
from wa_export.settings import load_settings
from wa_export.store.arrivals import ArrivalKey
from wa_export.store.connection import Store


@dataclass
class DatabaseClock:
    """The database's "now" for runs in this process (None: the server's own)."""

    now: datetime | None = None


@pytest.fixture
def database_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[DatabaseClock]:
    clock = DatabaseClock()
    real = Store.database_now
    monkeypatch.setattr(Store, "database_now", lambda store: clock.now if clock.now is not None else real(store))
    yield clock


def _schedule_variable(workspace_id: object) -> str:
    return f"WORKSPACE_{workspace_id}_SCHEDULE"


def _tenant(db: Any, name: str) -> tuple[str, ObjectId]:
    workspace_id = add_workspace(db, name)
    return str(workspace_id), add_chat(db, workspace_id)


def _say(db: Any, chat_id: ObjectId, *contents: str) -> None:
    """Messages arriving now (after every run so far: a window ends at its run's start)."""
    now = utcnow()
    add_messages(
        db,
        chat_id,
        [{"content": text, "timestamp": now + timedelta(milliseconds=n)} for n, text in enumerate(contents)],
    )


def _results(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {ws["workspace_id"]: ws for ws in parse_json(result)["workspaces"]}


def _slot(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%H:%M")


def _database_now(make_env: Any) -> datetime:
    settings = load_settings(environ=make_env())
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        return Store(client, settings).database_now()
    finally:
        client.close()


# ---- daily: once per slot, the rest waits ---------------------------------------------------------


def test_daily_delivers_at_its_slot_and_new_messages_wait_for_the_next(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id = _tenant(mongo_db, "Daily Digest")
    _say(mongo_db, chat_id, "before the slot")
    now = _database_now(make_env)
    addresses = {f"WORKSPACE_{workspace_id}_EMAIL": "digest@daily.test"}
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        **{_schedule_variable(workspace_id): f"daily@{_slot(now - timedelta(minutes=2))}"},
        **addresses,
    )

    first = cli(["export", "--json"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert _results(first)[workspace_id]["outcome"] == "completed"
    assert mailed_contents(smtp_server.messages) == ["before the slot"]
    cursor = mongo_db.export_state.find_one({"_id": workspace_id})["cursor"]

    _say(mongo_db, chat_id, "after the slot 1", "after the slot 2")
    second = cli(["export", "--json"], env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    waiting = _results(second)[workspace_id]
    assert waiting["outcome"] == "not_due"
    next_due = datetime.fromisoformat(waiting["next_due"])
    assert timedelta(hours=23) < next_due - now <= timedelta(hours=24)
    assert len(smtp_server.messages) == 1
    assert mongo_db.export_state.find_one({"_id": workspace_id})["cursor"] == cursor, "the cursor stays"
    plain = cli(["export"], env=env)
    assert plain.returncode == 0 and "not due" in plain.stdout, plain.stdout

    state = cli(["state", workspace_id, "--json"], env=env)
    assert state.returncode == 0, state.stdout + state.stderr
    [report] = parse_json(state)["workspaces"]
    assert report["schedule"] == f"daily@{_slot(now - timedelta(minutes=2))}"
    assert report["time_zone"] == "UTC"
    assert datetime.fromisoformat(report["next_due_at"]) == next_due
    assert report["waiting_messages"] == 2

    # A later slot that has already passed: due now, and everything waiting goes out once.
    env[_schedule_variable(workspace_id)] = f"daily@{_slot(now - timedelta(minutes=1))}"
    third = cli(["export", "--json"], env=env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert _results(third)[workspace_id]["outcome"] == "completed"
    assert Counter(mailed_contents(smtp_server.messages)) == Counter(
        ["before the slot", "after the slot 1", "after the slot 2"]
    )
    fourth = cli(["export", "--json"], env=env)
    assert _results(fourth)[workspace_id]["outcome"] == "not_due"
    assert len(smtp_server.messages) == 2


# ---- hourly, and daylight saving, on an injected database clock ---------------------------------------


def _clocked_run(env: dict[str, str], cwd: Path, clock: DatabaseClock, moment: datetime) -> dict[str, Any]:
    clock.now = moment
    result = run_cli_in_process(["export", "--json"], env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    [workspace] = parse_json(result)["workspaces"]
    return workspace


def test_hourly_delivers_once_per_hour_across_the_boundary(mongo_db, make_env, tmp_path, database_clock, smtp_server):
    workspace_id, chat_id = _tenant(mongo_db, "Hourly")
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        **{_schedule_variable(workspace_id): "hourly", f"WORKSPACE_{workspace_id}_EMAIL": "h@hourly.test"},
    )
    base = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
    steps = [  # (a message arriving then, the run's database time, the outcome)
        (base + timedelta(minutes=30), base + timedelta(minutes=40), "completed"),  # never served: due at once
        (base + timedelta(minutes=50), base + timedelta(minutes=55), "not_due"),
        (None, base + timedelta(minutes=59, seconds=59), "not_due"),
        (None, base + timedelta(hours=1), "completed"),  # 11:00 exactly: the new hour's slot
        (base + timedelta(hours=1, minutes=5), base + timedelta(hours=1, minutes=10), "not_due"),
        (None, base + timedelta(hours=2, minutes=20), "completed"),  # the 12:00 slot, by the first run after it
    ]
    outcomes = []
    for number, (arrival, run_at, _) in enumerate(steps):
        if arrival is not None:
            add_arrived(mongo_db, chat_id, arrival, f"message {number}")
        outcomes.append(_clocked_run(env, tmp_path, database_clock, run_at)["outcome"])
    assert outcomes == [outcome for _, _, outcome in steps]
    assert [[row[2] for row in mailed_rows(m)] for m in smtp_server.messages] == [
        ["message 0"],
        ["message 1"],
        ["message 4"],
    ]


BERLIN_DAYS = {
    # Spring forward on 2026-03-29: 02:30 does not exist, its slot is 03:00 CEST (01:00 UTC).
    "march": [
        (datetime(2026, 3, 28, 1, 15, tzinfo=UTC), "completed"),  # never served: due at once
        (datetime(2026, 3, 28, 1, 30, tzinfo=UTC), "completed"),  # 02:30 CET
        (datetime(2026, 3, 28, 1, 45, tzinfo=UTC), "not_due"),
        (datetime(2026, 3, 29, 0, 45, tzinfo=UTC), "not_due"),
        (datetime(2026, 3, 29, 1, 0, tzinfo=UTC), "completed"),  # 03:00 CEST, right after the gap
        (datetime(2026, 3, 29, 1, 15, tzinfo=UTC), "not_due"),
        (datetime(2026, 3, 29, 1, 30, tzinfo=UTC), "not_due"),
        (datetime(2026, 3, 30, 0, 15, tzinfo=UTC), "not_due"),
        (datetime(2026, 3, 30, 0, 30, tzinfo=UTC), "completed"),  # 02:30 CEST
    ],
    # Fall back on 2026-10-25: 02:30 happens twice; the first one (00:30 UTC) is the slot.
    "october": [
        (datetime(2026, 10, 24, 0, 15, tzinfo=UTC), "completed"),  # never served: due at once
        (datetime(2026, 10, 24, 0, 30, tzinfo=UTC), "completed"),  # 02:30 CEST
        (datetime(2026, 10, 25, 0, 15, tzinfo=UTC), "not_due"),
        (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "completed"),  # 02:30 CEST, its first occurrence
        (datetime(2026, 10, 25, 1, 30, tzinfo=UTC), "not_due"),  # 02:30 CET, the second one
        (datetime(2026, 10, 25, 1, 45, tzinfo=UTC), "not_due"),
        (datetime(2026, 10, 26, 1, 15, tzinfo=UTC), "not_due"),
        (datetime(2026, 10, 26, 1, 30, tzinfo=UTC), "completed"),  # 02:30 CET
    ],
}


@pytest.mark.parametrize("month", sorted(BERLIN_DAYS))
def test_daily_in_berlin_skips_and_doubles_no_slot_when_the_clocks_change(
    mongo_db, make_env, tmp_path, database_clock, smtp_server, month
):
    workspace_id, chat_id = _tenant(mongo_db, "Berlin Daily")
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        **{
            f"WORKSPACE_{workspace_id}_TIMEZONE": "Europe/Berlin",
            _schedule_variable(workspace_id): "daily@02:30",
            f"WORKSPACE_{workspace_id}_EMAIL": "b@berlin.test",
        },
    )
    outcomes = []
    for number, (run_at, _) in enumerate(BERLIN_DAYS[month]):
        add_arrived(mongo_db, chat_id, run_at - timedelta(minutes=5), f"before run {number}")
        outcomes.append(_clocked_run(env, tmp_path, database_clock, run_at)["outcome"])
    assert outcomes == [outcome for _, outcome in BERLIN_DAYS[month]]
    mailed = Counter(mailed_contents(smtp_server.messages))
    assert set(mailed) == {f"before run {n}" for n in range(len(outcomes))} - _waiting_after(BERLIN_DAYS[month])
    assert max(mailed.values()) == 1


def _waiting_after(steps: list[tuple[datetime, str]]) -> set[str]:
    """The messages added before the runs after the last delivery: they wait for the next slot."""
    last = max(number for number, (_, outcome) in enumerate(steps) if outcome == "completed")
    return {f"before run {n}" for n in range(last + 1, len(steps))}


# ---- off ------------------------------------------------------------------------------------------


def test_off_is_never_delivered_by_schedule_nor_warned_about_but_a_manual_export_works(
    mongo_db, make_env, cli, smtp_server
):
    quiet_id, quiet_chat = _tenant(mongo_db, "Manual Only")
    loud_id, loud_chat = _tenant(mongo_db, "Every Run")
    _say(mongo_db, quiet_chat, "quiet")
    _say(mongo_db, loud_chat, "loud")
    env = make_env(**{_schedule_variable(quiet_id): "off", f"WORKSPACE_{loud_id}_EMAIL": "loud@every.test"})
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    results = _results(result)
    assert results[quiet_id]["outcome"] == "not_due" and results[quiet_id]["next_due"] is None
    assert results[loud_id]["outcome"] == "completed"
    assert quiet_id not in result.stderr, "no missing-address warning for a workspace that is off"
    assert mailed_contents(smtp_server.messages) == ["loud"]
    assert mongo_db.export_state.find_one({"_id": quiet_id}) is None

    manual = cli(["export", "--workspace", quiet_id, "--hours", "1", "--email", "ops@manual.test"], env=env)
    assert manual.returncode == 0, manual.stdout + manual.stderr
    assert mailed_contents(smtp_server.messages[1:]) == ["quiet"]


# ---- invalid values --------------------------------------------------------------------------------


def test_an_invalid_schedule_variable_is_a_configuration_error(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id = _tenant(mongo_db, "Sometimes")
    _say(mongo_db, chat_id, "hello")
    variable = _schedule_variable(workspace_id)
    env = make_env(**{variable: "sometimes", f"WORKSPACE_{workspace_id}_EMAIL": "s@sometimes.test"})
    for command in (["config"], ["export"], ["export", "--dry-run"]):
        result = cli(command, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        said = f"{variable}: 'sometimes'" if command == ["config"] else f"{variable} 'sometimes'"  # INVALID X: …
        assert f"{said} is not a schedule" in result.stdout + result.stderr
    assert smtp_server.messages == []


def test_an_invalid_schedule_in_a_document_fails_only_that_workspace(mongo_db, make_env, cli, smtp_server):
    broken = str(
        mongo_db.workspaces.insert_one({"name": "Broken", "status": "active", "plan": {"when": "weekly"}}).inserted_id
    )
    fine = str(
        mongo_db.workspaces.insert_one({"name": "Fine", "status": "active", "plan": {"when": "hourly"}}).inserted_id
    )
    for workspace_id in (broken, fine):
        _say(mongo_db, add_chat(mongo_db, ObjectId(workspace_id)), f"to {workspace_id}")
    env = make_env(
        EXPORT_SCHEDULE_FIELD="plan.when",
        **{f"WORKSPACE_{broken}_EMAIL": "b@broken.test", f"WORKSPACE_{fine}_EMAIL": "f@fine.test"},
    )
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    results = _results(result)
    assert results[fine]["outcome"] == "completed"
    assert results[broken]["outcome"] == "failed"
    assert results[broken]["reason"].startswith(
        f"plan.when of workspace {broken} holds 'weekly', which is not a schedule"
    )
    assert mailed_contents(smtp_server.messages) == [f"to {fine}"]
    dry = cli(["export", "--dry-run", "--json"], env=env)
    assert dry.returncode == 1 and _results(dry)[broken]["outcome"] == "failed"


# ---- health ---------------------------------------------------------------------------------------


def test_health_judges_staleness_against_each_workspaces_schedule(
    mongo_db, make_env, tmp_path, database_clock, smtp_server
):
    workspace_id, chat_id = _tenant(mongo_db, "Health Daily")
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        EXPORT_INTERVAL_MINUTES="15",
        **{_schedule_variable(workspace_id): "daily@08:00", f"WORKSPACE_{workspace_id}_EMAIL": "h@health.test"},
    )
    slot = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
    add_arrived(mongo_db, chat_id, slot - timedelta(minutes=1), "morning")
    assert _clocked_run(env, tmp_path, database_clock, slot + timedelta(minutes=5))["outcome"] == "completed"

    def schedule_check(at: datetime) -> dict[str, Any]:
        database_clock.now = at
        return health_checks(run_cli_in_process(["health", "--json"], env, tmp_path))["workspace_schedules"]

    # Between slots a daily workspace is not stale, however long after its last delivery.
    assert schedule_check(slot + timedelta(hours=20))["status"] == "ok"
    # Runs every EXPORT_INTERVAL_MINUTES (15): the first run after a slot serves it within that interval.
    assert schedule_check(slot + timedelta(days=1, minutes=14))["status"] == "ok"
    stale = schedule_check(slot + timedelta(days=1, minutes=16))
    assert stale["status"] == "failed"
    assert workspace_id in stale["reason"] and "daily@08:00" in stale["reason"]


def test_health_reports_an_hourly_workspace_with_an_invalid_time_zone_as_the_run_fails_it(mongo_db, make_env, cli):
    workspace_id = str(
        mongo_db.workspaces.insert_one({"name": "Lost", "status": "active", "tz": "Mars/Base"}).inserted_id
    )
    env = make_env(EXPORT_TIMEZONE_FIELD="tz", **{_schedule_variable(workspace_id): "hourly"})
    run = _results(cli(["export", "--dry-run", "--json"], env=env))[workspace_id]
    check = health_checks(cli(["health", "--json"], env=env))["workspace_schedules"]
    assert run["outcome"] == "failed" and run["reason"].startswith(f"tz of workspace {workspace_id} holds 'Mars/Base'")
    assert check["status"] == "failed" and check["details"]["invalid"] == 1
    assert f"workspace {workspace_id} holds 'Mars/Base', which is not a known IANA time zone" in check["reason"]


# ---- several runs at once -------------------------------------------------------------------------


@pytest.mark.gated_smtp(2)
def test_concurrent_runs_and_workers_deliver_every_message_once(mongo_db, make_env, tmp_path, gated_smtp):
    tenants = {name: _tenant(mongo_db, name) for name in ("every-1", "every-2", "daily-kept", "daily-changed")}
    ids = {name: workspace_id for name, (workspace_id, _) in tenants.items()}
    now = _database_now(make_env)
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        **smtp_env(gated_smtp),
        **{f"WORKSPACE_{workspace_id}_EMAIL": f"{name}@many.test" for name, workspace_id in ids.items()},
        **{
            _schedule_variable(ids[name]): f"daily@{_slot(now - timedelta(minutes=3))}"
            for name in ("daily-kept", "daily-changed")
        },
    )

    def say_round(number: int) -> None:
        for name, (_, chat_id) in tenants.items():
            _say(mongo_db, chat_id, f"{name} round {number}")

    say_round(1)
    first = run_cli_processes_at_once([["export", "--json"], ["export", "--json"]], env, tmp_path)
    # Each run's first mail was held until both were connected: they provably overlapped.
    assert not gated_smtp.gate_timed_out and runs_overlapped(first)
    say_round(2)
    second = run_cli_processes_at_once([["export", "--json"], ["export", "--json"]], env, tmp_path)
    # The daily ones were served in round 1: round 2 delivers only the every-run workspaces, in one email each.
    second_outcomes = Counter((ws["workspace_id"], ws["outcome"]) for doc in second for ws in doc["workspaces"])
    assert (
        second_outcomes[(ids["daily-kept"], "not_due")] == 2 and second_outcomes[(ids["daily-changed"], "not_due")] == 2
    )
    say_round(3)
    env[_schedule_variable(ids["daily-changed"])] = f"daily@{_slot(now - timedelta(minutes=2))}"
    third = run_cli_processes_at_once([["export", "--workers", "2", "--json"], ["export", "--json"]], env, tmp_path)

    mailed = Counter(mailed_contents(gated_smtp.messages))
    assert max(mailed.values()) == 1, [text for text, n in mailed.items() if n > 1]
    waiting = {"daily-kept round 2", "daily-kept round 3"}
    expected = {f"{name} round {n}" for name in ids for n in (1, 2, 3)} - waiting
    assert set(mailed) == expected
    completed = Counter(
        ws["workspace_id"]
        for doc in [*first, *second, *third]
        for ws in doc["workspaces"]
        if ws["outcome"] == "completed"
    )
    assert completed[ids["daily-kept"]] == 1 and completed[ids["daily-changed"]] == 2


# ---- a workspace that is not due costs no command of its own --------------------------------------


def test_a_workspace_that_is_not_due_costs_no_command_of_its_own(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    monkeypatch.chdir(tmp_path)
    every_id, every_chat = _tenant(mongo_db, "Every")
    daily = [_tenant(mongo_db, f"Daily {n}") for n in range(4)]
    now = _database_now(make_env)
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        **{
            f"WORKSPACE_{workspace_id}_EMAIL": f"t{n}@cost.test"
            for n, (workspace_id, _) in enumerate([(every_id, every_chat), *daily])
        },
        **{_schedule_variable(workspace_id): f"daily@{_slot(now - timedelta(minutes=2))}" for workspace_id, _ in daily},
    )
    settings = load_settings(environ=env)
    for _, chat_id in [(every_id, every_chat), *daily]:
        _say(mongo_db, chat_id, "first")
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True)
    try:
        assert run_export(settings, Store(client, settings), ExportRequest()).count("completed") == 5
    finally:
        client.close()
    for _, chat_id in [(every_id, every_chat), *daily]:
        _say(mongo_db, chat_id, "second")

    log = CommandLog()
    client = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[log])
    try:
        result = run_export(settings, Store(client, settings), ExportRequest())
    finally:
        client.close()
    assert Counter(ws.outcome for ws in result.workspaces) == {"completed": 1, "not_due": 4}
    not_due = {workspace_id for workspace_id, _ in daily} | {str(chat_id) for _, chat_id in daily}
    own = [
        (name, collection)
        for name, collection, body in log.commands
        if any(text in str(body) for text in not_due)
        and not (name == "find" and collection == "chats")  # the shared pass names the chats it read, all at once
    ]
    assert own == [], own
    assert len(log.bodies("findAndModify", "export_state")) == 1  # one lease: the every-run workspace's


# ---- a slot served by another run meanwhile ---------------------------------------------------------


def test_a_run_that_read_the_slot_unserved_finds_it_served_under_the_lease_and_sends_nothing(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    """Two overlapping runs both read the slot unserved. The earlier one serves it; the later one reaches the
    workspace afterwards, with a message in its window the earlier one did not see: without the check on the
    lease's document it would send a second email for the same slot."""
    monkeypatch.chdir(tmp_path)
    workspace_id, chat_id = _tenant(mongo_db, "Raced Daily")
    _say(mongo_db, chat_id, "first")
    now = _database_now(make_env)
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        **{
            _schedule_variable(workspace_id): f"daily@{_slot(now - timedelta(minutes=2))}",
            f"WORKSPACE_{workspace_id}_EMAIL": "raced@daily.test",
        },
    )
    settings = load_settings(environ=env)
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True)
    store = Store(client, settings)

    def run_context(run_id: str) -> RunContext:
        clock = Clock(store.database_now())
        return RunContext(settings, store, ExportRequest(), run_id, clock, ArrivalKey(), MailSession(settings))

    try:
        time.sleep(1.1)  # "first" lies before the earlier run's end
        earlier = run_context("earlier-run")
        time.sleep(1.1)
        _say(mongo_db, chat_id, "second")  # after the earlier run's end, before the later run's
        later = run_context("later-run")
        [late_item] = make_plan(later, store.workspaces_by_id([workspace_id])).work
        [early_item] = make_plan(earlier, store.workspaces_by_id([workspace_id])).work
        assert late_item.serves is not None and late_item.serves == early_item.serves, "both due: never served"
        assert deliver(earlier, early_item).outcome == "completed"  # serves the slot
        earlier.mail.close()

        raced = deliver(later, late_item)
        later.mail.close()
        assert raced.outcome == "not_due", raced
        assert raced.next_due is not None and raced.next_due > now
        assert mailed_contents(smtp_server.messages) == ["first"], "one email for the slot"
        assert mongo_db.export_state.find_one({"_id": workspace_id})["lease_owner"] is None
        # Nothing was lost: what arrived after the earlier run's end waits for the next slot.
        env[_schedule_variable(workspace_id)] = f"daily@{_slot(now - timedelta(minutes=1))}"
        settings = load_settings(environ=env)
        assert run_export(settings, Store(client, settings), ExportRequest()).count("completed") == 1
        assert Counter(mailed_contents(smtp_server.messages)) == Counter(["first", "second"])
    finally:
        client.close()


# ---- dry run, metrics, the operator's view --------------------------------------------------------------


def test_dry_run_metrics_and_stats_see_the_schedule_as_the_run_does(mongo_db, make_env, cli, smtp_server, tmp_path):
    daily_id, daily_chat = _tenant(mongo_db, "Daily Reader")
    quiet_id, _ = _tenant(mongo_db, "Quiet Reader")
    _say(mongo_db, daily_chat, "morning news")
    now = _database_now(make_env)
    metrics = tmp_path / "wa_export.prom"
    env = make_env(
        EXPORT_TIMEZONE="UTC",
        EXPORT_METRICS_FILE=str(metrics),
        **{
            _schedule_variable(daily_id): f"daily@{_slot(now - timedelta(minutes=2))}",
            f"WORKSPACE_{daily_id}_TIMEZONE": "Asia/Kolkata",
            _schedule_variable(quiet_id): "off",
            f"WORKSPACE_{daily_id}_EMAIL": "d@reader.test",
        },
    )
    assert cli(["export"], env=env).returncode == 0
    _say(mongo_db, daily_chat, "evening news")

    dry = cli(["export", "--dry-run", "--json"], env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert {ws["workspace_id"]: ws["outcome"] for ws in parse_json(dry)["workspaces"]} == {
        daily_id: "not_due",
        quiet_id: "not_due",
    }
    real = cli(["export"], env=env)
    assert real.returncode == 0 and "2 not due" in real.stdout, real.stdout
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics.read_text(encoding="utf-8"))
        for sample in family.samples
    }
    assert samples[("wa_export_last_run_workspaces", (("outcome", "not_due"), ("trigger", "scheduled")))] == 2
    assert len(smtp_server.messages) == 1

    stats = parse_json(cli(["stats", daily_id, "--json"], env=env))["workspace"]
    assert stats["time_zone"] == {
        "value": "Asia/Kolkata",
        "source": "environment",
        "origin": f"WORKSPACE_{daily_id}_TIMEZONE",
        "problem": None,
    }
    assert stats["schedule"]["source"] == "environment" and stats["schedule"]["value"].startswith("daily@")
    plain = cli(["stats", daily_id], env=env).stdout
    assert f"Time zone: Asia/Kolkata (from the environment variable WORKSPACE_{daily_id}_TIMEZONE)" in plain
    assert "schedule: daily@" in plain

    config = parse_json(cli(["config", "--json"], env=env))
    listed = {line["variable"]: line for line in config["workspace_settings"]}
    assert listed[f"WORKSPACE_{daily_id}_TIMEZONE"]["value"] == "Asia/Kolkata"
    assert listed[_schedule_variable(quiet_id)]["value"] == "off"
    assert config["exit_code"] == 0

    state = run_cli_in_process(["state"], env, tmp_path).stdout
    assert "schedule=off" in state and "time_zone=Asia/Kolkata" in state and "next_due=" in state


def test_health_needs_no_address_for_a_workspace_that_is_off(mongo_db, make_env, cli):
    quiet_id, _ = _tenant(mongo_db, "Manual Only")
    result = cli(["health", "--json"], env=make_env(**{_schedule_variable(quiet_id): "off"}))
    checks = health_checks(result)
    assert checks["workspace_addresses"]["status"] == "ok", checks["workspace_addresses"]
    assert checks["workspace_schedules"]["status"] == "ok"
    without = health_checks(cli(["health", "--json"], env=make_env()))
    assert without["workspace_addresses"]["status"] == "failed"
