"""`wa-export state ID --move-past MESSAGE_ID`: skip exactly one message, not its second's neighbours.

The remedy for a message too big for any email. `--move-to TIME` can only put
the cursor at the start of a second, so it also skipped every message that
arrived in the same second after the big one; --move-past puts it right after
that one message's key. Real scheduled runs deliver before and after the move.
"""

from __future__ import annotations

import base64
import os
from datetime import datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId

from helpers import cursor_moves, cursor_of, mailed_contents, one_stderr_line, parse_json
from seeding import add_chat, add_workspace, message_doc, object_id_at, utcnow
from wa_export.commands import state as cursor_move
from wa_export.errors import WorkspaceBusy
from wa_export.settings import load_settings

TOO_BIG_LIMITS = {"EXPORT_MAX_ATTACHMENT_MB": "0.03", "EXPORT_MAX_ROWS_PER_EMAIL": "1"}


def _same_second(db: Any, chat: ObjectId, second: datetime, contents: list[str]) -> list[ObjectId]:
    """Messages whose ObjectIds share one timestamp second, arriving in the order of `contents`."""
    ids = sorted(object_id_at(second) for _ in contents)
    db.messages.insert_many(
        [
            message_doc(chat, _id=object_id, content=content, timestamp=second)
            for object_id, content in zip(ids, contents, strict=True)
        ]
    )
    return ids


def _successor(object_id: ObjectId) -> ObjectId:
    return ObjectId((int.from_bytes(object_id.binary, "big") + 1).to_bytes(12, "big"))


def test_moving_past_the_too_big_middle_message_delivers_the_rest_of_its_second(mongo_db, make_env, cli, smtp_server):
    workspace = add_workspace(mongo_db, "Huge Middle")
    chat = add_chat(mongo_db, workspace)
    env = make_env(**TOO_BIG_LIMITS, **{f"WORKSPACE_{workspace}_EMAIL": "ops@huge.test"})
    second = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    huge = "huge " + base64.b64encode(os.urandom(60_000)).decode()
    first, big, third = _same_second(mongo_db, chat, second, ["first", huge, "third"])

    failed = cli(["export"], env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert f"--move-past {big}" in failed.stdout + failed.stderr, "the failure names the remedy and the message"
    assert mailed_contents(smtp_server.wait_for_messages(1)) == ["first"]
    assert cursor_of(mongo_db, workspace) == big

    moved = cli(["state", str(workspace), "--move-past", str(big)], env=env)
    assert moved.returncode == 0, moved.stderr
    assert (
        "moved forward" in moved.stdout and f"message {big}" in moved.stdout and "will not be delivered" in moved.stdout
    )
    assert str(big) in moved.stdout and str(_successor(big)) in moved.stdout  # before and after
    assert "Messages waiting from the new cursor: 1" in moved.stdout
    assert cursor_of(mongo_db, workspace) == _successor(big)
    [event] = cursor_moves(mongo_db)
    assert event["past_message_id"] == str(big) and event["old_cursor"] == big
    assert event["new_cursor"] == _successor(big) and f"past message {big}" in event["message"]

    delivered = cli(["export"], env=env)
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    mails = smtp_server.wait_for_messages(2)
    assert mailed_contents(mails[1:]) == ["third"], "the message of the same second after the big one is delivered"
    assert cursor_of(mongo_db, workspace) > third
    assert cli(["export"], env=env).returncode == 0 and len(smtp_server.messages) == 2


def test_moving_past_the_first_message_of_a_second_delivers_the_other_two(mongo_db, make_env, cli, smtp_server):
    workspace = add_workspace(mongo_db, "First Skipped")
    chat = add_chat(mongo_db, workspace)
    env = make_env(**{f"WORKSPACE_{workspace}_EMAIL": "ops@first.test"})
    second = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    first, _, _ = _same_second(mongo_db, chat, second, ["unwanted", "second", "third"])
    start = cli(["state", str(workspace), "--move-to", second.isoformat()], env=env)
    assert start.returncode == 0, start.stderr

    moved = cli(["state", str(workspace), "--move-past", str(first), "--json"], env=env)
    assert moved.returncode == 0, moved.stderr
    document = parse_json(moved)
    assert document["ok"] is True and document["direction"] == "forward" and document["past_message_id"] == str(first)
    assert document["old_cursor_key"] == str(ObjectId.from_datetime(second))
    assert document["new_cursor_key"] == str(_successor(first))
    assert document["state"]["waiting_messages"] == 2

    run = cli(["export"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert mailed_contents(smtp_server.wait_for_messages(1)) == ["second", "third"]


def test_move_past_refusals_leave_the_cursor_and_the_logs_alone(mongo_db, make_env, cli):
    workspace = add_workspace(mongo_db, "Refusing Co")
    neighbour = add_workspace(mongo_db, "Neighbour Co")
    chat = add_chat(mongo_db, workspace)
    second = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    delivered, waiting, later = _same_second(mongo_db, chat, second, ["delivered", "waiting", "later"])
    [theirs] = _same_second(mongo_db, add_chat(mongo_db, neighbour), second, ["the neighbour's"])
    [nobodys] = _same_second(mongo_db, add_chat(mongo_db, [workspace, neighbour]), second, ["in a shared chat"])
    cursor = waiting  # `delivered` is behind it, `waiting` and `later` are not delivered yet
    mongo_db.export_state.insert_one({"_id": str(workspace), "cursor": cursor, "cursor_source": "export"})
    ws = str(workspace)

    refusals = {
        "malformed": (["state", ws, "--move-past", "not-an-id"], 2, "is not a message id"),
        "no workspace": (["state", "--move-past", str(waiting)], 2, "WORKSPACE_ID"),
        "both moves": (
            ["state", ws, "--move-past", str(waiting), "--move-to", second.isoformat()],
            2,
            "give one of them",
        ),
        "unknown": (["state", ws, "--move-past", str(ObjectId())], 2, "No message with id"),
        "another workspace's": (["state", ws, "--move-past", str(theirs)], 2, f"belongs to workspace {neighbour}"),
        "nobody's": (["state", ws, "--move-past", str(nobodys)], 2, "belongs to no single workspace"),
        "would skip an earlier one": (["state", ws, "--move-past", str(later)], 2, "would skip them too"),
    }
    for name, (args, code, words) in refusals.items():
        result = cli(args)
        assert result.returncode == code, (name, result.stdout, result.stderr)
        assert words in one_stderr_line(result.stderr), (name, result.stderr)

    behind = cli(["state", ws, "--move-past", str(delivered)])
    assert behind.returncode == 0, behind.stderr
    assert "already behind the delivery position" in behind.stdout and "nothing was moved" in behind.stdout
    as_json = parse_json(cli(["state", ws, "--move-past", str(delivered), "--json"]))
    assert as_json["direction"] == "already_past" and as_json["new_cursor_key"] == str(cursor)

    mongo_db.export_state.update_one(
        {"_id": ws}, {"$set": {"lease_owner": "host-b-9-beef", "lease_expires_at": utcnow() + timedelta(minutes=10)}}
    )
    busy = cli(["state", ws, "--move-past", str(waiting)])
    assert busy.returncode == 1 and "host-b-9-beef" in one_stderr_line(busy.stderr) and "not moved" in busy.stderr

    assert cursor_of(mongo_db, workspace) == cursor
    assert cursor_moves(mongo_db) == []


def test_a_date_arrival_key_passes_one_message_exactly_or_refuses_a_tie(mongo_db, make_env, cli):
    workspace = add_workspace(mongo_db, "Dated Co")
    chat = add_chat(mongo_db, workspace)
    arrived = utcnow() - timedelta(minutes=20)
    alone, tied, tied_too = (ObjectId() for _ in range(3))
    mongo_db.messages.insert_many(
        [
            message_doc(chat, _id=alone, content="alone", created_at=arrived),
            message_doc(chat, _id=tied, content="tied", created_at=arrived + timedelta(milliseconds=1)),
            message_doc(chat, _id=tied_too, content="tied too", created_at=arrived + timedelta(milliseconds=1)),
        ]
    )
    env = make_env(EXPORT_ARRIVAL_FIELD="created_at")
    assert cli(["state", str(workspace), "--move-to", arrived.isoformat()], env=env).returncode == 0

    tie = cli(["state", str(workspace), "--move-past", str(alone)], env=env)
    assert tie.returncode == 0, tie.stderr
    assert cursor_of(mongo_db, workspace) == arrived + timedelta(milliseconds=1), "just after it: the next two stay"
    assert "Messages waiting from the new cursor: 2" in tie.stdout

    refused = cli(["state", str(workspace), "--move-past", str(tied)], env=env)
    assert refused.returncode == 2
    assert "1 other message(s)" in one_stderr_line(refused.stderr) and "cannot pass one of them alone" in refused.stderr
    assert cursor_of(mongo_db, workspace) == arrived + timedelta(milliseconds=1)
    assert len(cursor_moves(mongo_db)) == 2  # the --move-to and the one --move-past


def test_a_cursor_moved_by_a_run_meanwhile_is_not_overwritten(mongo_db, make_env, tmp_path, monkeypatch):
    # Between the command's read and its write a run delivers and moves the cursor: the
    # write is conditional on the cursor it read, so it never moves the cursor back.
    workspace = add_workspace(mongo_db, "Racing Co")
    chat = add_chat(mongo_db, workspace)
    second = utcnow().replace(microsecond=0) - timedelta(minutes=30)
    skipped, _ = _same_second(mongo_db, chat, second, ["to skip", "after it"])
    mongo_db.export_state.insert_one({"_id": str(workspace), "cursor": skipped, "cursor_source": "export"})
    delivered_meanwhile = ObjectId.from_datetime(utcnow())
    read_position = cursor_move.position_key

    def position_then_a_run_delivers(*args: Any) -> Any:
        position = read_position(*args)
        mongo_db.export_state.update_one({"_id": str(workspace)}, {"$set": {"cursor": delivered_meanwhile}})
        return position

    monkeypatch.setattr(cursor_move, "position_key", position_then_a_run_delivers)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkspaceBusy, match="changed while this command ran"):
        cursor_move.move_cursor_past(load_settings(environ=make_env()), str(workspace), str(skipped))
    assert cursor_of(mongo_db, workspace) == delivered_meanwhile
    assert cursor_moves(mongo_db) == []
