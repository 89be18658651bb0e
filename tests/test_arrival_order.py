"""Delivery by arrival order: late messages, parts, messy data, where the first cursor starts.

Everything runs the installed `wa-export export` against the test MongoDB and
SMTP servers. A message's arrival is its `_id` (an ObjectId embeds the time it
was written); `_id=ObjectId()` makes a message that arrives now whatever its
`timestamp` says.
"""

from __future__ import annotations

import base64
import os
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId

from helpers import (
    attachments,
    cursor_of,
    mailed_contents,
    mailed_rows,
    parse_json,
    plain_body,
    sheet_rows,
    xlsx_files,
)
from seeding import (
    add_chat,
    add_messages,
    add_workspace,
    arrival_id,
    message_doc,
    settle_arrivals,
    utcnow,
)
from servers import free_port
from wa_export.export.email_text import POSSIBLE_DUPLICATE_SENTENCE
from wa_export.mail.message import encoded_attachment_size
from wa_export.settings import load_settings

SUBJECT_PART = re.compile(r"\(part (\d+) of (\d+)\)$")


def _workspace(db: Any, name: str) -> tuple[ObjectId, ObjectId, dict[str, str]]:
    workspace_id = add_workspace(db, name)
    chat_id = add_chat(db, workspace_id)
    return workspace_id, chat_id, {f"WORKSPACE_{workspace_id}_EMAIL": f"{name.split()[0].lower()}@arrival.test"}


# --- late arrivals ---------------------------------------------------------------------------


def test_messages_arriving_late_are_delivered_by_the_next_run_exactly_once(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _workspace(mongo_db, "Late Arrivals")
    add_messages(mongo_db, chat_id, [{"content": "on-time", "timestamp": utcnow() - timedelta(minutes=2)}])
    env = make_env(**address)
    first = cli(["export"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert mailed_contents(smtp_server.messages) == ["on-time"]
    window_end = cursor_of(mongo_db, workspace_id).generation_time  # the first run's window end

    # Written now, but with timestamps well before that window's end: webhook retries, offline phones, imports.
    late = {
        "late-1s": timedelta(seconds=1),
        "late-10min": timedelta(minutes=10),
        "late-2h": timedelta(hours=2),
        "late-3days": timedelta(days=3),
    }
    mongo_db.messages.insert_many(
        [message_doc(chat_id, _id=ObjectId(), content=text, timestamp=window_end - age) for text, age in late.items()]
    )
    settle_arrivals()
    second = cli(["export", "--json"], env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(smtp_server.messages) == 2
    rows = mailed_rows(smtp_server.messages[1])
    # Each appears with its own timestamp, in timestamp order.
    assert [row[2] for row in rows] == ["late-3days", "late-2h", "late-10min", "late-1s"]
    assert all(isinstance(row[3], datetime) for row in rows)

    settle_arrivals()
    third = cli(["export", "--json"], env=env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert parse_json(third)["message_count"] == 0
    assert Counter(mailed_contents(smtp_server.messages)) == Counter(["on-time", *late])  # each exactly once


# --- backlogs in parts ------------------------------------------------------------------------


def test_a_window_over_max_rows_goes_out_as_consecutive_parts_in_one_run(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _workspace(mongo_db, "Parts Rows")
    start = utcnow() - timedelta(minutes=10)
    # Arrival order and timestamp order differ: parts follow arrival, rows inside a part follow timestamps.
    arrivals = [start + timedelta(seconds=10 * index) for index in range(5)]
    stamps = [start - timedelta(minutes=index) for index in range(5)]
    mongo_db.messages.insert_many(
        [
            message_doc(chat_id, _id=arrival_id(arrivals[index]), content=f"m{index}", timestamp=stamps[index])
            for index in range(5)
        ]
    )
    result = cli(["export", "--json"], env=make_env(EXPORT_MAX_ROWS_PER_EMAIL="2", **address))
    assert result.returncode == 0, result.stdout + result.stderr
    [workspace] = parse_json(result)["workspaces"]
    assert workspace["outcome"] == "completed" and workspace["parts"] == 3 and workspace["emails_sent"] == 3

    mails = smtp_server.messages
    assert len(mails) == 3
    contents = []
    for number, mail in enumerate(mails, 1):
        message = mail.message()
        part = SUBJECT_PART.search(message["Subject"])
        assert part and part.groups() == (str(number), "3"), message["Subject"]
        assert f"Part: {number} of 3" in plain_body(message)
        contents.append([row[2] for row in mailed_rows(mail)])
    # Consecutive arrivals per part; inside a part by timestamp (m1 is older than m0).
    assert contents == [["m1", "m0"], ["m3", "m2"], ["m4"]]
    logs = list(mongo_db.export_logs.find().sort("part", 1))
    assert [(log["part"], log["parts"], log["status"], log["message_count"]) for log in logs] == [
        (1, 3, "completed", 2),
        (2, 3, "completed", 2),
        (3, 3, "completed", 1),
    ]
    assert (
        logs[0]["window_end_key"] == logs[1]["window_start_key"]
        and logs[1]["window_end_key"] == logs[2]["window_start_key"]
    ), "the parts are consecutive ranges of arrival keys"
    assert cursor_of(mongo_db, workspace_id) == logs[2]["window_end_key"]


def test_a_window_over_the_attachment_limit_is_cut_until_every_part_fits(mongo_db, make_env, cli, smtp_server):
    _, chat_id, address = _workspace(mongo_db, "Parts Size")
    start = utcnow() - timedelta(minutes=8)
    # Incompressible text (random base64), so the workbook size follows the rows.
    backlog = [f"big{index} " + base64.b64encode(os.urandom(1500)).decode() for index in range(24)]
    add_messages(
        mongo_db,
        chat_id,
        [{"content": text, "timestamp": start + timedelta(seconds=index)} for index, text in enumerate(backlog)],
    )
    limit_mb = 0.02  # 20,971 bytes once encoded: a few rows per workbook
    result = cli(["export", "--json"], env=make_env(EXPORT_MAX_ATTACHMENT_MB=str(limit_mb), **address))
    assert result.returncode == 0, result.stdout + result.stderr
    [workspace] = parse_json(result)["workspaces"]
    assert workspace["outcome"] == "completed" and workspace["parts"] > 2
    mails = smtp_server.messages
    assert len(mails) == workspace["parts"]
    for mail in mails:
        [(_, _, payload)] = attachments(mail.message())
        assert encoded_attachment_size(len(payload)) <= limit_mb * 2**20
    delivered = [row[2] for mail in mails for row in mailed_rows(mail)]
    assert delivered == backlog, "the union of the parts is exactly the backlog, in order, each once"
    assert len(xlsx_files(Path(make_env()["EXPORT_DIR"]))) == len(mails), "no oversized workbook is left behind"


def test_after_smtp_was_down_for_several_runs_the_first_good_run_delivers_everything(
    mongo_db, make_env, cli, smtp_server
):
    workspace_id, chat_id, address = _workspace(mongo_db, "Outage")
    export_dir = Path(make_env()["EXPORT_DIR"])
    down = make_env(SMTP_PORT=str(free_port()), EXPORT_MAX_ROWS_PER_EMAIL="3", **address)
    sent: list[str] = []
    for attempt in range(3):
        contents = [f"a{attempt}-{index}" for index in range(2)]
        add_messages(mongo_db, chat_id, [{"content": text, "timestamp": utcnow()} for text in contents])
        sent += contents
        failed = cli(["export", "--json"], env=down)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        [workspace] = parse_json(failed)["workspaces"]
        assert workspace["outcome"] == "failed"
        # The undelivered window is on disk once: this attempt's parts replaced the last attempt's.
        parts = -(-len(sent) // 3)
        files = xlsx_files(export_dir)
        assert len(files) == parts, [path.name for path in files]
        assert sorted(row[2] for path in files for row in sheet_rows(path)) == sorted(sent)
        state = mongo_db.export_state.find_one({"_id": str(workspace_id)})
        assert state["consecutive_failures"] == attempt + 1 and "connect" in state["last_error"].lower()
        assert sorted(state["pending_files"]) == sorted(str(path) for path in files)

    recovered = cli(["export", "--json"], env=make_env(EXPORT_MAX_ROWS_PER_EMAIL="3", **address))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert sorted(mailed_contents(smtp_server.messages)) == sorted(sent)
    assert len(smtp_server.messages) == 2
    state = mongo_db.export_state.find_one({"_id": str(workspace_id)})
    assert state["consecutive_failures"] == 0 and state["pending_files"] == [] and state["in_flight"] is None
    assert len(xlsx_files(export_dir)) == 2, "only the delivered workbooks are kept"


def test_a_single_message_too_big_for_any_email_fails_the_workspace_and_holds_the_cursor(
    mongo_db, make_env, cli, smtp_server
):
    workspace_id, chat_id, address = _workspace(mongo_db, "Huge Message")
    start = utcnow() - timedelta(minutes=5)
    add_messages(
        mongo_db,
        chat_id,
        [
            {"content": "small-before", "timestamp": start},
            {
                "content": "huge " + base64.b64encode(os.urandom(60_000)).decode(),
                "timestamp": start + timedelta(seconds=1),
            },
            {"content": "small-after", "timestamp": start + timedelta(seconds=2)},
        ],
    )
    huge_id = mongo_db.messages.find_one({"content": {"$regex": "^huge"}})["_id"]
    result = cli(
        ["export", "--json"], env=make_env(EXPORT_MAX_ATTACHMENT_MB="0.03", EXPORT_MAX_ROWS_PER_EMAIL="1", **address)
    )
    assert result.returncode == 1, result.stdout + result.stderr
    [workspace] = parse_json(result)["workspaces"]
    assert workspace["outcome"] == "failed"
    assert "single message" in workspace["reason"] and "EXPORT_MAX_ATTACHMENT_MB" in workspace["reason"]
    assert mailed_contents(smtp_server.messages) == ["small-before"], "what comes before it is delivered"
    assert cursor_of(mongo_db, workspace_id) == huge_id, "the cursor stops right before the message"


# --- messy data ------------------------------------------------------------------------------


def test_messy_timestamps_string_chat_ids_and_shared_chats_are_exported_and_counted(
    mongo_db, make_env, cli, smtp_server
):
    workspace_a, chat_a, address_a = _workspace(mongo_db, "Alpha Messy")
    workspace_b, chat_b, address_b = _workspace(mongo_db, "Beta Messy")
    shared = add_chat(mongo_db, [workspace_a, workspace_b])  # workspace_id is an array: belongs to nobody
    arrived = utcnow() - timedelta(minutes=3)
    iso = datetime(2026, 2, 3, 4, 5, 6, tzinfo=UTC)

    def message(content: str, chat: Any = chat_a, **fields: Any) -> dict[str, Any]:
        return {**message_doc(chat, _id=arrival_id(arrived), content=content), **fields}

    no_timestamp = message("no-timestamp")
    del no_timestamp["timestamp"]
    mongo_db.messages.insert_many(
        [
            message("iso-text", timestamp="2026-02-03T04:05:06"),  # naive: UTC
            message("epoch-seconds", timestamp=int(iso.timestamp())),
            message("epoch-millis", timestamp=int(iso.timestamp()) * 1000),
            no_timestamp,
            message("gibberish", timestamp="next tuesday"),
            message("string-chat", chat_id=str(chat_a)),
            message("shared-chat", chat=shared),
            message("beta-own", chat=chat_b),
        ]
    )
    result = cli(["export", "--json"], env=make_env(**address_a, **address_b))
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    by_id = {ws["workspace_id"]: ws for ws in document["workspaces"]}
    alpha = by_id[str(workspace_a)]
    assert alpha["anomalies"] == {"non_date_timestamp": 3, "unparsed_timestamp": 2, "string_chat_id": 1}
    assert document["anomalies"]["ambiguous_chat"] == 1
    assert "1 ambiguous_chat" in document["summary"] and "3 non_date_timestamp" in document["summary"]

    mails = {mail.rcpt_tos[0]: mail for mail in smtp_server.messages}
    assert set(mails) == {"alpha@arrival.test", "beta@arrival.test"}
    alpha_rows = {row[2]: row for row in mailed_rows(mails["alpha@arrival.test"])}
    beta_rows = {row[2]: row for row in mailed_rows(mails["beta@arrival.test"])}
    assert set(alpha_rows) == {"iso-text", "epoch-seconds", "epoch-millis", "no-timestamp", "gibberish", "string-chat"}
    assert set(beta_rows) == {"beta-own"}, "the shared chat goes to neither workspace"
    naive_iso = iso.replace(tzinfo=None)  # EXPORT_TIMEZONE is UTC: the cell holds UTC wall time
    for text in ("iso-text", "epoch-seconds", "epoch-millis"):
        assert alpha_rows[text][3] == naive_iso, (text, alpha_rows[text][3])
    assert alpha_rows["no-timestamp"][3] is None and alpha_rows["gibberish"][3] is None
    log = mongo_db.export_logs.find_one({"workspace_id": str(workspace_a)})
    assert log["anomalies"] == alpha["anomalies"]
    event = mongo_db.system_logs.find_one({"kind": "export_run"})
    assert event["anomalies"]["ambiguous_chat"] == 1


# --- where the original service stopped -------------------------------------------------------


def _original_service_export(db: Any, workspace_id: ObjectId, minutes_ago: float) -> datetime:
    moment = utcnow() - timedelta(minutes=minutes_ago)
    db.export_logs.insert_one(
        {  # exactly the original service's fields: no run_id, no trigger
            "workspace_id": str(workspace_id),
            "export_type": "whatsapp_messages",
            "export_timestamp": moment,
            "message_count": 3,
            "file_path": "/old/exports/acme/acme_whatsapp_messages.xlsx",
            "email_sent_to": "old@original.test",
            "status": "completed",
            "error_message": None,
            "created_at": moment,
            "updated_at": moment,
        }
    )
    return moment


def test_the_first_run_starts_where_the_original_service_stopped(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _workspace(mongo_db, "Switched Over")
    _original_service_export(mongo_db, workspace_id, minutes_ago=30)
    now = utcnow()
    add_messages(
        mongo_db,
        chat_id,
        [
            {"content": "before-cutover", "timestamp": now - timedelta(minutes=31)},  # delivered by the old service
            {"content": "after-cutover-20", "timestamp": now - timedelta(minutes=20)},
            {"content": "after-cutover-5", "timestamp": now - timedelta(minutes=5)},
        ],
    )
    result = cli(["export", "--json"], env=make_env(**address))
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    [workspace] = document["workspaces"]
    assert workspace["cursor_source"] == "original_service"
    assert "1 from original_service" in document["summary"]
    assert sorted(mailed_contents(smtp_server.messages)) == ["after-cutover-20", "after-cutover-5"]
    state = mongo_db.export_state.find_one({"_id": str(workspace_id)})
    assert state["cursor_source"] == "export"  # moved on by the delivery since


def test_an_original_export_older_than_the_backfill_limit_is_ignored(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _workspace(mongo_db, "Long Gone")
    _original_service_export(mongo_db, workspace_id, minutes_ago=30)
    now = utcnow()
    add_messages(
        mongo_db,
        chat_id,
        [
            {"content": "older-than-interval", "timestamp": now - timedelta(minutes=20)},
            {"content": "within-interval", "timestamp": now - timedelta(minutes=5)},
        ],
    )
    quiet = add_workspace(mongo_db, "Quiet New")  # no messages: its first cursor is created in bulk
    env = make_env(EXPORT_BACKFILL_MAX_HOURS="0.25", **address, **{f"WORKSPACE_{quiet}_EMAIL": "q@arrival.test"})
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    by_id = {ws["workspace_id"]: ws for ws in parse_json(result)["workspaces"]}
    assert by_id[str(workspace_id)]["cursor_source"] == "first_interval"
    assert mailed_contents(smtp_server.messages) == ["within-interval"]  # the usual first window: one interval
    assert by_id[str(quiet)]["outcome"] == "no_messages" and by_id[str(quiet)]["cursor_source"] == "first_interval"
    assert mongo_db.export_state.find_one({"_id": str(quiet)})["cursor_source"] == "first_interval"


# --- upgrading from the timestamp watermark ---------------------------------------------------


def test_a_timestamp_watermark_is_migrated_and_its_overlap_flagged(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _workspace(mongo_db, "Upgraded")
    watermark = utcnow() - timedelta(minutes=10)
    mongo_db.export_state.insert_one(
        {
            "_id": str(workspace_id),
            "watermark": watermark,
            "lease_owner": None,
            "lease_expires_at": None,
            "last_success_at": watermark,
        }
    )
    add_messages(
        mongo_db,
        chat_id,
        [
            {"content": "before-watermark", "timestamp": watermark - timedelta(minutes=1)},
            # Arrived within EXPORT_LAG_SECONDS after the old watermark: the old run may have sent it.
            {"content": "just-after", "timestamp": watermark + timedelta(seconds=20)},
            {"content": "later", "timestamp": watermark + timedelta(minutes=5)},
        ],
    )
    result = cli(["export", "--json"], env=make_env(EXPORT_LAG_SECONDS="60", EXPORT_MAX_ROWS_PER_EMAIL="1", **address))
    assert result.returncode == 0, result.stdout + result.stderr
    [workspace] = parse_json(result)["workspaces"]
    assert workspace["cursor_source"] == "legacy_watermark"
    assert [mailed_contents([mail]) for mail in smtp_server.messages] == [["just-after"], ["later"]]
    first, second = (mail.message() for mail in smtp_server.messages)
    assert POSSIBLE_DUPLICATE_SENTENCE in plain_body(first)
    assert POSSIBLE_DUPLICATE_SENTENCE not in plain_body(second)
    flags = [log["possible_duplicate"] for log in mongo_db.export_logs.find().sort("part", 1)]
    assert flags == [True, False]
    state = mongo_db.export_state.find_one({"_id": str(workspace_id)})
    assert state["watermark"].replace(tzinfo=UTC) == watermark, "read to migrate, never rewritten"
    assert state["in_flight"] is None and state["last_possible_duplicate_at"] is not None


# --- a cursor ahead of the database's clock -------------------------------------------------


def test_a_cursor_ahead_of_the_database_clock_is_pulled_back_and_hides_nothing(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _workspace(mongo_db, "Future Cursor")
    ahead = ObjectId.from_datetime(utcnow() + timedelta(hours=2))  # e.g. moved there by a host clock 2 h ahead
    mongo_db.export_state.insert_one(
        {
            "_id": str(workspace_id),
            "cursor": ahead,
            "cursor_source": "export",
            "lease_owner": None,
            "lease_expires_at": None,
            "consecutive_failures": 0,
            "in_flight": None,
            "pending_files": [],
        }
    )
    env = make_env(**address)
    health = cli(["health", "--json"], env=env)
    checks = {check["name"]: check for check in parse_json(health)["checks"]}
    assert (
        checks["arrival_order"]["status"] == "warning"
        and "ahead of the database clock" in checks["arrival_order"]["reason"]
    )

    first = cli(["export", "--json"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    [workspace] = parse_json(first)["workspaces"]
    assert workspace["anomalies"] == {"cursor_ahead_of_database_clock": 1} and "ahead" in workspace["reason"]
    assert cursor_of(mongo_db, workspace_id) < ahead
    add_messages(mongo_db, chat_id, [{"content": "after-the-pull-back", "timestamp": utcnow()}])
    second = cli(["export"], env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert mailed_contents(smtp_server.messages) == ["after-the-pull-back"]


# --- EXPORT_ARRIVAL_FIELD ---------------------------------------------------------------------


def test_a_date_arrival_field_orders_delivery_and_a_message_without_it_is_reported(
    mongo_db, make_env, cli, smtp_server
):
    workspace_id, chat_id, address = _workspace(mongo_db, "Dated Arrivals")
    written = utcnow() - timedelta(minutes=4)
    mongo_db.messages.insert_many(
        [
            # String ids (a platform whose _id is no ObjectId): created_at, set at insert, orders them.
            {**message_doc(chat_id, content="first", timestamp=written), "_id": "m-1", "created_at": written},
            {
                **message_doc(chat_id, content="late", timestamp=written - timedelta(days=2)),
                "_id": "m-2",
                "created_at": written + timedelta(seconds=1),
            },
            {**message_doc(chat_id, content="unplaceable", timestamp=written), "_id": "m-3"},  # no created_at
        ]
    )
    env = make_env(EXPORT_ARRIVAL_FIELD="created_at", **address)
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    assert sorted(mailed_contents(smtp_server.messages)) == ["first", "late"]
    [problem] = document["problems"]
    assert "created_at" in problem and "EXPORT_ARRIVAL_FIELD" in problem
    assert "\n" not in problem and problem.endswith(".") and "m-3" in problem, "one sentence naming an example"
    assert problem in document["summary"]
    cursor = cursor_of(mongo_db, workspace_id)
    assert isinstance(cursor, datetime) and cursor.replace(tzinfo=UTC) > written + timedelta(seconds=1)

    health = cli(["health", "--json"], env=env)
    checks = {check["name"]: check for check in parse_json(health)["checks"]}
    assert checks["arrival_order"]["status"] == "failed" and checks["arrival_order"]["reason"] == problem
    assert {
        "db.messages.createIndex({ created_at: 1 })",
        "db.messages.createIndex({ chat_id: 1, created_at: 1 })",
    } <= set(checks["indexes"]["details"]["commands"])


def test_message_ids_that_are_no_objectids_are_reported_by_the_run_and_health(mongo_db, make_env, cli, smtp_server):
    _, chat_id, address = _workspace(mongo_db, "Odd Ids")
    add_messages(mongo_db, chat_id, [{"content": "objectid", "timestamp": utcnow()}])  # most ids are ObjectIds
    mongo_db.messages.insert_one({**message_doc(chat_id, content="string id"), "_id": "legacy-0001"})
    env = make_env(**address)
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [problem] = parse_json(result)["problems"]
    assert "_id" in problem and "ObjectId" in problem and "EXPORT_ARRIVAL_FIELD" in problem
    checks = {check["name"]: check for check in parse_json(cli(["health", "--json"], env=env))["checks"]}
    assert checks["arrival_order"]["status"] == "failed" and "'legacy-0001'" in checks["arrival_order"]["reason"]


# --- the new settings -------------------------------------------------------------------------


def test_the_delivery_settings_are_validated_before_anything_runs(make_env, cli, smtp_server):
    for name, value in (
        ("EXPORT_MAX_ROWS_PER_EMAIL", "0"),
        ("EXPORT_MAX_ROWS_PER_EMAIL", "many"),
        ("EXPORT_ARRIVAL_FIELD", "$where"),
        ("EXPORT_ARRIVAL_FIELD", "created at"),
        ("EXPORT_BACKFILL_MAX_HOURS", "-1"),
        ("EXPORT_MAX_ATTACHMENT_MB", "0"),
    ):
        result = cli(["export"], env=make_env(**{name: value}))
        assert result.returncode == 2, (name, value, result.stdout + result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert name in line and "Traceback" not in result.stderr, line
    assert smtp_server.connection_count == 0


def test_fractional_attachment_limits_and_the_defaults(tmp_path):
    empty = tmp_path / "empty.env"  # never the working directory's .env
    empty.write_text("")
    settings = load_settings(empty, environ={"EXPORT_MAX_ATTACHMENT_MB": "0.05"})
    assert settings.max_attachment_bytes == int(0.05 * 2**20)
    defaults = load_settings(empty, environ={})
    assert (defaults.export_arrival_field, defaults.export_max_rows_per_email, defaults.export_backfill_max_hours) == (
        "_id",
        100_000,
        24.0,
    )
