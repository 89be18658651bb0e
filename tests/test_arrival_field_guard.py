"""A wrong EXPORT_ARRIVAL_FIELD never loses messages: no cursor moves past messages a run could not see.

Everything runs the installed `wa-export` against the test MongoDB and SMTP
servers: a field no message has, a field of the wrong type, and a cursor
written while another kind of arrival field was configured.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId

from helpers import health_checks, mailed_contents, one_stderr_line, parse_json
from seeding import add_chat, add_messages, add_workspace, message_doc, settle_arrivals, utcnow
from wa_export.store.arrivals import NEWEST_PROBED


def _states(db: Any) -> list[dict[str, Any]]:
    return sorted(db.export_state.find(), key=lambda document: document["_id"])


def _address(workspace_id: ObjectId, name: str) -> dict[str, str]:
    return {f"WORKSPACE_{workspace_id}_EMAIL": f"{name}@arrival-guard.test"}


@pytest.mark.parametrize(
    ("wrong_field", "says"),
    [("created_at", "none of the newest messages has that field"), ("content", "hold a str there, not a BSON date")],
)
def test_a_wrong_arrival_field_moves_no_cursor_and_the_right_one_delivers_everything_once(
    wrong_field, says, mongo_db, make_env, cli, smtp_server
):
    known = add_workspace(mongo_db, "Known Co")
    known_chat = add_chat(mongo_db, known)
    add_messages(mongo_db, known_chat, [{"content": "before", "timestamp": utcnow() - timedelta(minutes=2)}])
    addresses = _address(known, "known")
    first = cli(["export"], env=make_env(**addresses))
    assert first.returncode == 0, first.stdout + first.stderr
    assert mailed_contents(smtp_server.messages) == ["before"]

    # Meanwhile: new messages, and a new tenant that has no cursor yet (its first one must not be made either).
    fresh = add_workspace(mongo_db, "Fresh Co")
    fresh_chat = add_chat(mongo_db, fresh, customer_phone="+4915100000002")
    addresses |= _address(fresh, "fresh")
    add_messages(mongo_db, known_chat, [{"content": f"meanwhile-{number}"} for number in range(3)])
    add_messages(mongo_db, fresh_chat, [{"content": "fresh-1"}])
    states_before = _states(mongo_db)

    wrong = make_env(EXPORT_ARRIVAL_FIELD=wrong_field, **addresses)
    for _ in range(2):  # the timer keeps firing until someone looks
        refused = cli(["export"], env=wrong)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        sentence = one_stderr_line(refused.stderr).removeprefix("wa-export: ")
        assert "EXPORT_ARRIVAL_FIELD" in sentence and repr(wrong_field) in sentence and says in sentence, sentence
        assert sentence.endswith(".") and "no cursor" in sentence
    assert _states(mongo_db) == states_before, "not one cursor moved, none was created"
    assert len(smtp_server.messages) == 1, "nothing was sent"
    assert parse_json(cli(["export", "--json"], env=wrong))["error"] == sentence

    arrival = health_checks(cli(["health", "--json"], env=wrong))["arrival_order"]
    assert arrival["status"] == "failed" and arrival["reason"] == sentence

    fixed = cli(["export"], env=make_env(**addresses))
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert sorted(mailed_contents(smtp_server.messages)) == sorted(
        ["before", "meanwhile-0", "meanwhile-1", "meanwhile-2", "fresh-1"]
    ), "every message, each exactly once"
    assert health_checks(cli(["health", "--json"], env=make_env(**addresses)))["arrival_order"]["status"] == "ok"


def test_the_check_reads_a_few_of_the_newest_messages_not_all_of_them(mongo_db, make_env, cli, smtp_server):
    # Old messages without the field are reported (never exported), but the field is right: the run goes on.
    workspace = add_workspace(mongo_db, "Dated Co")
    chat = add_chat(mongo_db, workspace)
    an_hour_ago = utcnow() - timedelta(hours=1)
    mongo_db.messages.insert_many(
        [message_doc(chat, content=f"old-{n}", timestamp=an_hour_ago) for n in range(NEWEST_PROBED + 5)]
    )
    newest = message_doc(chat, content="dated", created_at=utcnow() - timedelta(seconds=30))
    mongo_db.messages.insert_one(newest)
    settle_arrivals([newest["_id"]])
    result = cli(["export", "--json"], env=make_env(EXPORT_ARRIVAL_FIELD="created_at", **_address(workspace, "d")))
    assert result.returncode == 0, result.stdout + result.stderr
    assert mailed_contents(smtp_server.messages) == ["dated"]
    [problem] = parse_json(result)["problems"]
    assert problem.startswith("Some messages have no value in created_at")


def test_a_cursor_written_under_another_arrival_field_is_refused_until_it_is_moved(
    mongo_db, make_env, cli, smtp_server, tmp_path
):
    # The platform writes both an ObjectId _id and a created_at date: either field can order it.
    workspace = add_workspace(mongo_db, "Switching Co")
    chat = add_chat(mongo_db, workspace)
    addresses = _address(workspace, "switching")
    add_messages(mongo_db, chat, [{"content": "first", "created_at": utcnow() - timedelta(minutes=2)}])
    first = cli(["export"], env=make_env(**addresses))
    assert first.returncode == 0, first.stdout + first.stderr
    cursor = mongo_db.export_state.find_one({"_id": str(workspace)})["cursor"]
    assert isinstance(cursor, ObjectId)
    add_messages(mongo_db, chat, [{"content": "second", "created_at": utcnow()}])
    states_before = _states(mongo_db)

    metrics = tmp_path / "wa_export.prom"
    dated = make_env(EXPORT_ARRIVAL_FIELD="created_at", EXPORT_METRICS_FILE=str(metrics), **addresses)
    refused = cli(["export", "--json"], env=dated)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    # The metrics file is still written; how many wait behind that cursor is unknown, so not claimed.
    assert "Traceback" not in refused.stderr and "wa_export_last_run_exit_code" in metrics.read_text()
    assert "wa_export_workspace_waiting_messages" not in metrics.read_text()
    [outcome] = parse_json(refused)["workspaces"]
    reason = outcome["reason"]
    assert outcome["outcome"] == "failed" and "\n" not in reason and reason.endswith(".")
    assert str(cursor) in reason and "EXPORT_ARRIVAL_FIELD" in reason
    assert f"wa-export state {workspace} --move-to" in reason
    assert _states(mongo_db) == states_before and mailed_contents(smtp_server.messages) == ["first"]

    # `state` refuses to count from it too (it would count from the wrong place), with the same sentence.
    shown = cli(["state", str(workspace)], env=dated)
    assert shown.returncode == 2 and one_stderr_line(shown.stderr) == f"wa-export: {reason}"

    arrival = health_checks(cli(["health", "--json"], env=dated))["arrival_order"]
    assert arrival["status"] == "failed" and arrival["details"]["foreign_cursors"] == 1
    assert "EXPORT_ARRIVAL_FIELD" in arrival["reason"] and "--move-to" in arrival["reason"]

    # The fix the sentence names: the cursor placed in the new field at the time it stood for.
    moved = cli(["state", str(workspace), "--move-to", cursor.generation_time.isoformat()], env=dated)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    delivered = cli(["export"], env=dated)
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    assert mailed_contents(smtp_server.messages) == ["first", "second"]
    assert health_checks(cli(["health", "--json"], env=dated))["arrival_order"]["status"] == "ok"


@pytest.mark.parametrize("value", ["a..b", ".created_at", "$where", "created at"])
def test_config_calls_an_arrival_field_that_is_no_field_path_invalid(value, make_env, cli):
    result = cli(["config"], env=make_env(EXPORT_ARRIVAL_FIELD=value))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "INVALID EXPORT_ARRIVAL_FIELD" in result.stdout and "configuration valid" not in result.stdout


def test_a_foreign_cursor_fails_only_its_workspace_and_the_others_are_delivered(mongo_db, make_env, cli, smtp_server):
    # Python 3.11/3.12 compared the refused work item field by field, reading its unset start: the whole run crashed.
    steady = add_workspace(mongo_db, "Steady Co")  # first in _id order: already planned when the other is refused
    switching = add_workspace(mongo_db, "Switching Co")
    steady_chat, switching_chat = (
        add_chat(mongo_db, steady),
        add_chat(mongo_db, switching, customer_phone="+4915100000003"),
    )
    add_messages(mongo_db, switching_chat, [{"content": "switching-1", "created_at": utcnow() - timedelta(minutes=2)}])
    first = cli(["export"], env=make_env(**_address(switching, "switching")))
    assert first.returncode == 0, first.stdout + first.stderr
    add_messages(mongo_db, steady_chat, [{"content": "steady-1", "created_at": utcnow()}])

    dated = make_env(
        EXPORT_ARRIVAL_FIELD="created_at", **_address(steady, "steady"), **_address(switching, "switching")
    )
    result = cli(["export", "--json"], env=dated)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stdout + result.stderr
    outcomes = {outcome["workspace_name"]: outcome for outcome in parse_json(result)["workspaces"]}
    assert outcomes["Steady Co"]["outcome"] == "completed"
    assert (
        outcomes["Switching Co"]["outcome"] == "failed" and "EXPORT_ARRIVAL_FIELD" in outcomes["Switching Co"]["reason"]
    )
    assert mailed_contents(smtp_server.messages) == ["switching-1", "steady-1"]


def test_state_shows_every_workspace_and_names_the_one_with_a_foreign_cursor(mongo_db, make_env, cli, smtp_server):
    steady, switching = add_workspace(mongo_db, "Steady Co"), add_workspace(mongo_db, "Switching Co")
    add_messages(
        mongo_db, add_chat(mongo_db, switching), [{"content": "s", "created_at": utcnow() - timedelta(minutes=2)}]
    )
    assert cli(["export"], env=make_env(**_address(switching, "switching"))).returncode == 0
    dated = make_env(
        EXPORT_ARRIVAL_FIELD="created_at", **_address(steady, "steady"), **_address(switching, "switching")
    )
    sentence = parse_json(cli(["export", "--json"], env=dated))["workspaces"]
    reason = next(outcome["reason"] for outcome in sentence if outcome["workspace_name"] == "Switching Co")

    overview = cli(["state", "--json"], env=dated)
    assert overview.returncode == 0 and "Traceback" not in overview.stderr, overview.stdout + overview.stderr
    shown = {workspace["workspace_name"]: workspace for workspace in parse_json(overview)["workspaces"]}
    assert set(shown) == {"Steady Co", "Switching Co"}, "one foreign cursor hides no other workspace"
    assert shown["Switching Co"]["cursor_problem"] == reason and shown["Switching Co"]["waiting_messages"] is None
    assert shown["Steady Co"]["cursor_problem"] is None
    plain = cli(["state"], env=dated)
    assert plain.returncode == 0 and f"cursor_problem={json.dumps(reason)}" in plain.stdout, plain.stdout
