"""`wa-export state`: see and steer the delivery cursors.

The export_state documents are seeded directly in the cursor schema (cursor,
cursor_source, lease, in_flight, ...), so these tests do not depend on which
export engine wrote them. The two "next scheduled run" tests at the end need
the arrival-order engine: they drive real scheduled runs after a move.
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from helpers import commands_of, cursor_moves, mailed_contents, parse_json, run_on_a_terminal
from seeding import add_arrived, add_chat, add_workspace, message_doc, utcnow
from wa_export.commands import state as state_command
from wa_export.settings import load_settings
from wa_export.store.connection import SERVICE_NAME
from wa_export.store.state import WorkspaceState

KOLKATA = ZoneInfo("Asia/Kolkata")
PHONE = "+4915112345678"


def _whole_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def _state_json(cli: Any, env: dict[str, str], *args: str) -> dict[str, Any]:
    result = cli(["state", "--json", *args], env=env)
    assert result.returncode == 0, result.stderr
    return parse_json(result)


def _by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["workspace_id"]: entry for entry in document["workspaces"]}


def _seed_busy_workspace(db: Any, now: datetime) -> dict[str, Any]:
    """A workspace mid-delivery: cursor 2 h back, 4 waiting messages, a live lease, failures, an in-flight part."""
    workspace = add_workspace(db, "Cursor Co")
    neighbour = add_workspace(db, "Neighbour Co")
    chat = add_chat(db, workspace, customer_phone=PHONE)
    shared = add_chat(db, [workspace, neighbour])  # belongs to nobody: never delivered, never waiting
    cursor_time = _whole_second(now - timedelta(hours=2))
    cursor = ObjectId.from_datetime(cursor_time)
    add_arrived(db, chat, now - timedelta(hours=3), "delivered long ago")
    add_arrived(db, chat, cursor_time - timedelta(seconds=1), "delivered just before the cursor")
    oldest = _whole_second(now - timedelta(minutes=90))
    add_arrived(db, chat, oldest, "waiting 1")
    add_arrived(db, chat, now - timedelta(minutes=60), "waiting 2", timestamp=now - timedelta(days=3))  # late arrival
    add_arrived(db, chat, now - timedelta(minutes=30), "waiting 3")
    add_arrived(db, str(chat), now - timedelta(minutes=10), "waiting 4, chat_id stored as a string")
    add_arrived(db, shared, now - timedelta(minutes=20), "in a chat of two workspaces")
    add_arrived(db, add_chat(db, neighbour), now - timedelta(minutes=20), "the neighbour's")
    in_flight = {
        "log_id": ObjectId(),
        "run_id": "host-b-4242-deadbeef",
        "from_key": cursor,
        "to_key": ObjectId.from_datetime(now - timedelta(minutes=45)),
        "part": 1,
        "parts": 2,
        "started_at": now - timedelta(minutes=5),
    }
    db.export_state.insert_one(
        {
            "_id": str(workspace),
            "cursor": cursor,
            "cursor_source": "export",
            "cursor_set_at": cursor_time,
            "lease_owner": "host-b-4242-deadbeef",
            "lease_expires_at": now + timedelta(minutes=10),
            "lease_acquired_at": now - timedelta(minutes=5),
            "in_flight": in_flight,
            "last_success_at": now - timedelta(hours=2),
            "last_attempt_at": now - timedelta(minutes=5),
            "consecutive_failures": 3,
            "last_error": "SMTP server refused the message (552 too big)",
            "last_possible_duplicate_at": now - timedelta(days=1),
            "pending_files": [],
            "created_at": now - timedelta(days=30),
            "updated_at": now - timedelta(minutes=5),
        }
    )
    return {
        "workspace": workspace,
        "neighbour": neighbour,
        "cursor": cursor,
        "cursor_time": cursor_time,
        "oldest": oldest,
        "in_flight": in_flight,
    }


def test_state_json_shows_cursor_waiting_lease_failures_duplicate_and_in_flight(mongo_db, make_env, cli):
    now = utcnow()
    seeded = _seed_busy_workspace(mongo_db, now)
    workspace = str(seeded["workspace"])

    everything = _state_json(cli, make_env())
    assert everything["timezone"] == "UTC" and everything["arrival_field"] == "_id"
    database_time = datetime.fromisoformat(everything["database_time"])
    assert abs(database_time - now) < timedelta(minutes=2)
    assert set(_by_id(everything)) == {workspace, str(seeded["neighbour"])}

    entry = _by_id(_state_json(cli, make_env(), workspace))[workspace]
    assert entry["workspace_name"] == "Cursor Co"
    assert datetime.fromisoformat(entry["cursor_time"]) == seeded["cursor_time"]
    assert entry["cursor_key"] == str(seeded["cursor"])
    assert entry["cursor_source"] == "export"
    # 3 in its chat after the cursor + 1 whose chat_id is the string form; not
    # the two before the cursor, not the shared chat's, not the neighbour's.
    assert entry["waiting_messages"] == 4 and entry["waiting_messages_capped"] is False
    assert datetime.fromisoformat(entry["oldest_waiting_at"]) == seeded["oldest"]
    age = entry["oldest_waiting_age_seconds"]
    assert 90 * 60 - 1 <= age <= 90 * 60 + 120, age  # measured on the database clock
    assert entry["lease_owner"] == "host-b-4242-deadbeef" and entry["lease_held"] is True
    assert datetime.fromisoformat(entry["lease_expires_at"]) == now + timedelta(minutes=10)
    assert datetime.fromisoformat(entry["last_success_at"]) == now - timedelta(hours=2)
    assert entry["consecutive_failures"] == 3
    assert entry["last_error"] == "SMTP server refused the message (552 too big)"
    assert datetime.fromisoformat(entry["last_possible_duplicate_at"]) == now - timedelta(days=1)
    in_flight = entry["in_flight"]
    assert in_flight["run_id"] == "host-b-4242-deadbeef" and (in_flight["part"], in_flight["parts"]) == (1, 2)
    assert in_flight["from_key"] == str(seeded["cursor"]) and in_flight["log_id"] == str(seeded["in_flight"]["log_id"])
    assert entry["cursor_ahead_of_database_clock"] is False

    neighbour = _by_id(everything)[str(seeded["neighbour"])]
    assert neighbour["cursor_time"] is None and neighbour["next_run_start_source"] == "first_interval"
    assert neighbour["lease_held"] is False and neighbour["consecutive_failures"] == 0


def test_state_plain_lines_under_cron_and_a_table_on_a_terminal(mongo_db, make_env, cli, tmp_path):
    now = utcnow()
    seeded = _seed_busy_workspace(mongo_db, now)
    workspace = str(seeded["workspace"])
    env = make_env(EXPORT_TIMEZONE="Asia/Kolkata")

    plain = cli(["state"], env=env)
    assert plain.returncode == 0, plain.stderr
    assert "\x1b[" not in plain.stdout and "│" not in plain.stdout
    lines = [line for line in plain.stdout.splitlines() if f"workspace={workspace}" in line]
    assert len(lines) == 1, plain.stdout  # one greppable line per workspace
    line = lines[0]
    cursor_local = seeded["cursor_time"].astimezone(KOLKATA).isoformat()
    assert f"cursor={cursor_local}" in line and "+05:30" in line
    for field in (
        "cursor_source=export",
        "waiting=4",
        "lease=held",
        "lease_owner=host-b-4242-deadbeef",
        "consecutive_failures=3",
        "oldest_waiting_age_seconds=",
        "last_possible_duplicate=",
        "in_flight=",
    ):
        assert field in line, (field, line)
    neighbour_line = next(line for line in plain.stdout.splitlines() if str(seeded["neighbour"]) in line)
    assert "cursor=none" in neighbour_line and "no cursor yet" in neighbour_line and "lease=free" in neighbour_line

    code, screen = run_on_a_terminal(["state"], env, str(tmp_path))
    assert code == 0, screen
    assert f"workspace={workspace}" in screen  # the greppable line, as under cron
    assert "Cursor Co" in screen and "held" in screen and "Asia/Kolkata" in screen
    assert f"{seeded['cursor_time'].astimezone(KOLKATA):%H:%M}" in screen
    for output in (plain.stdout, screen):  # counts and times only, never personal data
        assert PHONE not in output and "waiting 1" not in output


def test_state_lists_workspaces_without_a_cursor_and_v1_watermarks(mongo_db, make_env, cli):
    now = utcnow()
    fresh = str(add_workspace(mongo_db, "Fresh Co"))
    migrated = add_workspace(mongo_db, "Migrated Co")
    stale = str(add_workspace(mongo_db, "Stale Co"))
    ours = str(add_workspace(mongo_db, "Ours Co"))
    legacy = add_workspace(mongo_db, "Legacy Co")
    inactive = str(add_workspace(mongo_db, "Paused Co", status="inactive"))
    original_end = now - timedelta(hours=2)
    chat = add_chat(mongo_db, migrated)
    add_arrived(mongo_db, chat, now - timedelta(hours=3), "before the original service's last export")
    add_arrived(mongo_db, chat, now - timedelta(hours=1), "after it")
    legacy_chat = add_chat(mongo_db, legacy)
    add_arrived(mongo_db, legacy_chat, now - timedelta(minutes=50), "before the watermark")
    add_arrived(mongo_db, legacy_chat, now - timedelta(minutes=20), "after the watermark")
    original = {
        "export_type": "whatsapp_messages",
        "status": "completed",
        "message_count": 3,
        "email_sent_to": "a@x.test",
        "file_path": "/old/service.xlsx",
    }
    mongo_db.export_logs.insert_many(
        [
            {**original, "workspace_id": str(migrated), "export_timestamp": original_end},
            {**original, "workspace_id": str(migrated), "export_timestamp": now - timedelta(hours=5)},
            {**original, "workspace_id": stale, "export_timestamp": now - timedelta(hours=30)},
            # entries this tool wrote carry a run_id: they are no original-service position
            {**original, "workspace_id": ours, "export_timestamp": now - timedelta(hours=1), "run_id": "h-1-ab"},
            {
                **original,
                "workspace_id": str(migrated),
                "export_timestamp": now - timedelta(minutes=1),
                "status": "failed",
            },
        ]
    )
    mongo_db.export_state.insert_one(
        {"_id": str(legacy), "watermark": now - timedelta(minutes=30), "lease_owner": None, "lease_expires_at": None}
    )

    entries = _by_id(_state_json(cli, make_env()))
    assert inactive not in entries  # only active workspaces, unless named
    assert entries[fresh]["cursor_time"] is None and entries[fresh]["next_run_start_source"] == "first_interval"
    assert entries[fresh]["next_run_starts_at"] is None and entries[fresh]["waiting_messages"] is None
    first = entries[str(migrated)]
    assert first["next_run_start_source"] == "original_service"
    assert datetime.fromisoformat(first["next_run_starts_at"]) == original_end
    assert first["waiting_messages"] == 1
    assert entries[stale]["next_run_start_source"] == "first_interval"  # older than EXPORT_BACKFILL_MAX_HOURS
    assert entries[ours]["next_run_start_source"] == "first_interval"
    old = entries[str(legacy)]
    assert old["cursor_time"] is None and datetime.fromisoformat(old["legacy_watermark"]) == now - timedelta(minutes=30)
    assert old["waiting_messages"] == 1

    longer = _by_id(_state_json(cli, make_env(EXPORT_BACKFILL_MAX_HOURS="48")))
    assert longer[stale]["next_run_start_source"] == "original_service"

    named = _by_id(_state_json(cli, make_env(), inactive))
    assert named[inactive]["workspace_status"] == "inactive"

    plain = cli(["state"], env=make_env())
    assert plain.returncode == 0, plain.stderr
    fresh_line = next(line for line in plain.stdout.splitlines() if fresh in line)
    assert "no cursor yet" in fresh_line and "15 min" in fresh_line
    migrated_line = next(line for line in plain.stdout.splitlines() if str(migrated) in line)
    assert f"starts at {original_end:%Y-%m-%d %H:%M:%S}" in migrated_line
    legacy_line = next(line for line in plain.stdout.splitlines() if str(legacy) in line)
    assert "v1 watermark" in legacy_line and "legacy_watermark=" in legacy_line


def test_counts_over_all_workspaces_stop_at_the_cap_and_one_workspace_is_exact(
    mongo_db, make_env, tmp_path, monkeypatch
):
    now = utcnow()
    workspace = add_workspace(mongo_db, "Backlog Co")
    chat = add_chat(mongo_db, workspace)
    for minutes in range(5, 0, -1):
        add_arrived(mongo_db, chat, now - timedelta(minutes=minutes), f"m{minutes}")
    mongo_db.export_state.insert_one(
        {"_id": str(workspace), "cursor": ObjectId.from_datetime(now - timedelta(hours=1)), "cursor_source": "export"}
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(state_command, "WAITING_COUNT_CAP", 3)
    settings = load_settings(environ=make_env())

    overview = state_command.state(settings, None)
    assert overview.waiting_count_cap == 3
    waiting = overview.workspaces[0].waiting
    assert waiting is not None and (waiting.count, waiting.capped) == (3, True)

    single = state_command.state(settings, str(workspace))
    assert single.waiting_count_cap is None
    exact = single.workspaces[0].waiting
    assert exact is not None and (exact.count, exact.capped) == (5, False)
    assert exact.oldest_at == _whole_second(now - timedelta(minutes=5))


def test_state_refuses_unknown_and_malformed_workspaces(mongo_db, make_env, cli):
    add_workspace(mongo_db, "Known Co")
    malformed = cli(["state", "not-an-id"])
    assert malformed.returncode == 2 and "not a workspace id" in malformed.stderr
    unknown = cli(["state", str(ObjectId())])
    assert unknown.returncode == 2 and "No workspace with id" in unknown.stderr
    moving = cli(["state", str(ObjectId()), "--move-to", "2024-01-01T00:00", "--json"])
    assert moving.returncode == 2 and parse_json(moving)["ok"] is False
    no_id = cli(["state", "--move-to", "2024-01-01T00:00"])
    assert no_id.returncode == 2 and "WORKSPACE_ID" in no_id.stderr
    bad_time = cli(["state", str(add_workspace(mongo_db, "Other Co")), "--move-to", "yesterday"])
    assert bad_time.returncode == 2 and "--move-to 'yesterday' is not an ISO 8601 time" in bad_time.stderr
    for result in (malformed, unknown, moving, no_id, bad_time):
        assert "Traceback" not in result.stderr
    assert mongo_db.export_state.count_documents({}) == 0 and mongo_db.system_logs.count_documents({}) == 0


# --- --move-to ---------------------------------------------------------------------------


def test_move_back_sets_the_cursor_records_the_move_and_leaves_in_flight(mongo_db, make_env, cli):
    now = utcnow()
    workspace = add_workspace(mongo_db, "Rewind Co")
    old_cursor = ObjectId.from_datetime(now - timedelta(minutes=10))
    in_flight = {
        "log_id": ObjectId(),
        "run_id": "dead-run",
        "from_key": old_cursor,
        "to_key": ObjectId.from_datetime(now - timedelta(minutes=5)),
        "part": 1,
        "parts": 1,
        "started_at": now - timedelta(minutes=6),
    }
    mongo_db.export_state.insert_one(
        {
            "_id": str(workspace),
            "cursor": old_cursor,
            "cursor_source": "export",
            # the lease of a run that died: expired on the database clock, so free
            "lease_owner": "dead-run",
            "lease_expires_at": now - timedelta(minutes=1),
            "in_flight": in_flight,
            "consecutive_failures": 1,
        }
    )
    target_local = (now - timedelta(hours=3)).astimezone(KOLKATA).replace(tzinfo=None, microsecond=0)
    target = target_local.replace(tzinfo=KOLKATA).astimezone(UTC)

    result = cli(
        ["state", str(workspace), "--move-to", target_local.isoformat()], env=make_env(EXPORT_TIMEZONE="Asia/Kolkata")
    )
    assert result.returncode == 0, result.stderr
    new_key = ObjectId.from_datetime(target)
    assert "moved back" in result.stdout
    assert str(old_cursor) in result.stdout and str(new_key) in result.stdout
    assert f"{target.astimezone(KOLKATA):%Y-%m-%d %H:%M:%S}" in result.stdout

    document = mongo_db.export_state.find_one({"_id": str(workspace)})
    assert document["cursor"] == new_key and document["cursor_source"] == "moved"
    assert abs(document["cursor_set_at"] - now) < timedelta(minutes=2)
    assert document["in_flight"] == in_flight  # the engine still needs it to flag a possible duplicate
    assert document["consecutive_failures"] == 1

    [event] = cursor_moves(mongo_db)
    assert event["service"] == SERVICE_NAME and isinstance(event["timestamp"], datetime)
    # The time as `logs --system` shows it, in EXPORT_TIMEZONE and named (the event's fields keep UTC).
    local_target = f"{target.astimezone(KOLKATA):%Y-%m-%d %H:%M:%S} Asia/Kolkata"
    for text in (str(workspace), str(old_cursor), str(new_key), local_target, "back", socket.gethostname()):
        assert text in event["message"], (text, event["message"])
    assert event["workspace_id"] == str(workspace) and event["host"] == socket.gethostname()
    assert event["old_cursor"] == old_cursor and event["new_cursor"] == new_key

    shown = cli(["logs", "--system"])
    assert "cursor moved" in shown.stdout and str(workspace) in shown.stdout


def test_move_is_refused_while_another_run_holds_the_lease(mongo_db, make_env, cli):
    now = utcnow()
    workspace = add_workspace(mongo_db, "Busy Co")
    cursor = ObjectId.from_datetime(now - timedelta(minutes=10))
    mongo_db.export_state.insert_one(
        {
            "_id": str(workspace),
            "cursor": cursor,
            "cursor_source": "export",
            "lease_owner": "host-a-17-cafe",
            "lease_expires_at": now + timedelta(minutes=10),
        }
    )

    result = cli(["state", str(workspace), "--move-to", (now - timedelta(hours=1)).isoformat()])
    assert result.returncode == 1, result
    assert "host-a-17-cafe" in result.stderr and "not moved" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    as_json = cli(["state", str(workspace), "--move-to", (now - timedelta(hours=1)).isoformat(), "--json"])
    assert as_json.returncode == 1 and parse_json(as_json) == {
        "ok": False,
        "exit_code": 1,
        "error": as_json.stderr.strip().removeprefix("wa-export: "),
    }
    document = mongo_db.export_state.find_one({"_id": str(workspace)})
    assert document["cursor"] == cursor and document["cursor_source"] == "export"
    assert cursor_moves(mongo_db) == []


def test_state_shows_a_live_lease_with_an_odd_owner_as_held_as_runs_and_moves_treat_it(mongo_db, make_env, cli):
    now = utcnow()
    numbered, unnamed = add_workspace(mongo_db, "Numbered Co"), add_workspace(mongo_db, "Unnamed Co")
    live = {"lease_expires_at": now + timedelta(minutes=10), "cursor": "bogus", "cursor_source": 7}
    mongo_db.export_state.insert_one({"_id": str(numbered), "lease_owner": 5, **live})
    mongo_db.export_state.insert_one({"_id": str(unnamed), "lease_owner": "", **live})

    document = parse_json(cli(["state", "--json"], env=make_env()))
    shown = {w["workspace_id"]: w for w in document["workspaces"]}
    assert shown[str(numbered)]["lease_held"] is True and shown[str(numbered)]["lease_owner"] == "5"
    assert shown[str(unnamed)]["lease_held"] is True and shown[str(unnamed)]["lease_owner"] == ""
    assert shown[str(numbered)]["cursor_source"] is None  # the stored cursor is no key: no source to show
    moved = cli(["state", str(numbered), "--move-to", (now - timedelta(hours=1)).isoformat()], env=make_env())
    assert moved.returncode == 1 and "being exported by 5" in moved.stderr  # the same lease, the same verdict

    # The one rule, as the lease's conditional write judges it: an expiry ahead holds it, whoever is named (or nobody).
    nameless = WorkspaceState.from_document("w", {"lease_expires_at": now + timedelta(minutes=1)})
    assert nameless.lease_held(now) and nameless.leased_by_other(now, "this-run")  # a dry run reports it leased
    assert WorkspaceState.from_document("w", {"lease_owner": 5}).lease_owner == "5"
    assert not WorkspaceState.from_document("w", {"lease_owner": "a", "lease_expires_at": now}).lease_held(now)


def test_a_move_without_a_workspace_asks_for_it_before_reading_its_value(make_env, cli):
    for option in (["--move-to", "garbage"], ["--move-past", "garbage"]):
        result = cli(["state", *option], env=make_env())
        assert result.returncode == 2 and "give its WORKSPACE_ID" in result.stderr, result.stderr


def test_move_creates_a_cursor_then_moves_it_forward(mongo_db, make_env, cli):
    now = utcnow()
    workspace = add_workspace(mongo_db, "New Co")
    chat = add_chat(mongo_db, workspace)
    add_arrived(mongo_db, chat, now - timedelta(minutes=45), "skipped by the forward move")
    add_arrived(mongo_db, chat, now - timedelta(minutes=15), "still waiting")
    first_time = _whole_second(now - timedelta(hours=1))

    created = cli(["state", str(workspace), "--move-to", first_time.isoformat(), "--json"])
    assert created.returncode == 0, created.stderr
    document = parse_json(created)
    assert document["direction"] == "created" and document["old_cursor_key"] is None
    assert document["new_cursor_key"] == str(ObjectId.from_datetime(first_time))
    assert document["state"]["waiting_messages"] == 2
    stored = mongo_db.export_state.find_one({"_id": str(workspace)})
    assert stored["cursor"] == ObjectId.from_datetime(first_time) and isinstance(stored["created_at"], datetime)

    later = _whole_second(now - timedelta(minutes=30))
    forward = cli(["state", str(workspace), "--move-to", later.isoformat()])
    assert forward.returncode == 0, forward.stderr
    assert "moved forward" in forward.stdout and "will not be delivered" in forward.stdout
    assert "Messages waiting from the new cursor: 1" in forward.stdout
    assert mongo_db.export_state.find_one({"_id": str(workspace)})["cursor"] == ObjectId.from_datetime(later)
    assert [event["direction"] for event in cursor_moves(mongo_db)] == ["created", "forward"]


def test_move_into_the_future_of_the_database_clock_is_refused(mongo_db, make_env, cli):
    now = utcnow()
    workspace = add_workspace(mongo_db, "Future Co")
    cursor = ObjectId.from_datetime(now - timedelta(minutes=10))
    mongo_db.export_state.insert_one({"_id": str(workspace), "cursor": cursor, "cursor_source": "export"})

    result = cli(["state", str(workspace), "--move-to", (now + timedelta(hours=1)).isoformat()])
    assert result.returncode == 2, result
    assert "later than the database clock" in result.stderr
    assert mongo_db.export_state.find_one({"_id": str(workspace)})["cursor"] == cursor
    assert cursor_moves(mongo_db) == []


def test_move_with_a_date_arrival_field(mongo_db, make_env, cli):
    now = utcnow()
    workspace = add_workspace(mongo_db, "Dated Co")
    chat = add_chat(mongo_db, workspace)
    mongo_db.messages.insert_many(
        [
            message_doc(chat, content="early", created_at=now - timedelta(hours=2)),
            message_doc(chat, content="late", created_at=now - timedelta(minutes=20)),
        ]
    )
    env = make_env(EXPORT_ARRIVAL_FIELD="created_at")
    target = now - timedelta(hours=1)

    moved = cli(["state", str(workspace), "--move-to", target.isoformat(), "--json"], env=env)
    assert moved.returncode == 0, moved.stderr
    stored = mongo_db.export_state.find_one({"_id": str(workspace)})
    assert stored["cursor"] == target  # a date cursor for a date arrival field
    entry = _by_id(_state_json(cli, env, str(workspace)))[str(workspace)]
    assert datetime.fromisoformat(entry["cursor_time"]) == target
    assert entry["waiting_messages"] == 1
    assert datetime.fromisoformat(entry["oldest_waiting_at"]) == now - timedelta(minutes=20)


def test_move_is_one_conditional_write_on_the_lease(mongo_db, make_env, tmp_path, monkeypatch):
    # The check "no live lease" and the move are one atomic command: a run that
    # takes the lease a moment later sees the moved cursor, never a half move.
    now = utcnow()
    workspace = add_workspace(mongo_db, "Atomic Co")
    mongo_db.export_state.insert_one(
        {"_id": str(workspace), "cursor": ObjectId.from_datetime(now), "cursor_source": "export"}
    )
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env())
    with commands_of(monkeypatch, state_command, settings) as listener:
        state_command.move_cursor(settings, str(workspace), (now - timedelta(hours=1)).isoformat())
    writes = [
        (name, command)
        for name, collection, command in listener.commands
        if collection == "export_state" and name in ("findAndModify", "update", "insert", "delete")
    ]
    assert len(writes) == 1, writes
    name, command = writes[0]
    assert name == "findAndModify"
    assert command["query"]["_id"] == str(workspace)
    assert command["query"]["$or"][0] == {"lease_expires_at": None}
    assert "$lte" in command["query"]["$or"][1]["lease_expires_at"]
    assert command["update"]["$set"]["cursor_source"] == "moved"


# --- the next scheduled run after a move: these need the arrival-order engine ---------------


def _three_arrivals(db: Any, now: datetime) -> tuple[ObjectId, dict[str, datetime]]:
    workspace = add_workspace(db, "Steered Co")
    chat = add_chat(db, workspace)
    arrivals = {
        "three hours ago": now - timedelta(hours=3),
        "two hours ago": now - timedelta(hours=2),
        "one hour ago": now - timedelta(hours=1),
    }
    for content, moment in arrivals.items():
        add_arrived(db, chat, moment, content)
    return workspace, arrivals


def test_move_back_redelivers_from_that_time_on_the_next_scheduled_run(mongo_db, make_env, cli, smtp_server):
    now = utcnow()
    workspace, arrivals = _three_arrivals(mongo_db, now)
    env = make_env(**{f"WORKSPACE_{workspace}_EMAIL": "ops@steered.test"})
    start = cli(["state", str(workspace), "--move-to", (now - timedelta(minutes=150)).isoformat()], env=env)
    assert start.returncode == 0, start.stderr

    first = cli(["export"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(mailed_contents(smtp_server.wait_for_messages(1))) == ["one hour ago", "two hours ago"]
    again = cli(["export"], env=env)
    assert again.returncode == 0 and len(smtp_server.messages) == 1  # nothing new: nothing sent twice

    back = cli(
        ["state", str(workspace), "--move-to", (arrivals["three hours ago"] - timedelta(seconds=1)).isoformat()],
        env=env,
    )
    assert back.returncode == 0 and "moved back" in back.stdout
    redelivery = cli(["export"], env=env)
    assert redelivery.returncode == 0, redelivery.stdout + redelivery.stderr
    mails = smtp_server.wait_for_messages(2)
    assert sorted(mailed_contents(mails[1:])) == ["one hour ago", "three hours ago", "two hours ago"]
    assert len(cursor_moves(mongo_db)) == 2


def test_move_forward_skips_what_arrived_before_on_the_next_scheduled_run(mongo_db, make_env, cli, smtp_server):
    now = utcnow()
    workspace, _ = _three_arrivals(mongo_db, now)
    env = make_env(**{f"WORKSPACE_{workspace}_EMAIL": "ops@steered.test"})
    for moment in (now - timedelta(hours=4), now - timedelta(minutes=90)):
        moved = cli(["state", str(workspace), "--move-to", moment.isoformat(), "--json"], env=env)
        assert moved.returncode == 0, moved.stderr
    assert [event["direction"] for event in cursor_moves(mongo_db)] == ["created", "forward"]

    run = cli(["export"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert mailed_contents(smtp_server.wait_for_messages(1)) == ["one hour ago"]
    assert cli(["export"], env=env).returncode == 0
    assert len(smtp_server.messages) == 1
