"""The export pipeline end to end: the installed CLI against real MongoDB and SMTP servers."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId
from openpyxl import load_workbook

from helpers import (
    ORIGINAL_EXPORT_LOG_FIELDS,
    XLSX_MIME,
    GatedSmtpServer,
    attachments,
    cursor_of,
    lease_skips,
    mailed_contents,
    mailed_rows,
    parse_json,
    plain_body,
    runs_overlapped,
    sheet_rows,
    smtp_env,
    xlsx_files,
)
from seeding import add_chat, add_messages, add_workspace, seed_workspace, settle_arrivals, start_cli, utcnow
from servers import free_port

FILE_NAME = re.compile(r"^[a-z0-9_]+_whatsapp_messages_\d{4}-\d{2}-\d{2}_\d{2}-\d{2}(_\d+)?\.xlsx$")


EXPORT_LOG_FIELDS = (*ORIGINAL_EXPORT_LOG_FIELDS, "window_start", "window_end", "trigger", "run_id")


def _assert_export_log_schema(log: dict[str, Any]) -> None:
    missing = [name for name in EXPORT_LOG_FIELDS if name not in log]
    assert not missing, f"export_logs document lacks {missing}: {log}"
    assert isinstance(log["workspace_id"], str) and ObjectId.is_valid(log["workspace_id"])
    assert log["export_type"] == "whatsapp_messages"
    assert log["status"] in ("completed", "failed")
    assert isinstance(log["message_count"], int)
    assert isinstance(log["email_sent_to"], str)
    for name in ("export_timestamp", "created_at", "updated_at", "window_start", "window_end"):
        assert isinstance(log[name], datetime), (name, log[name])
    assert log["window_start"] < log["window_end"]
    assert log["trigger"] in ("scheduled", "manual") and isinstance(log["run_id"], str) and log["run_id"]
    if log["status"] == "failed":
        assert isinstance(log["error_message"], str) and log["error_message"]


def _assert_run_event_schema(event: dict[str, Any]) -> None:
    for name in ("event_type", "message", "timestamp", "service"):
        assert name in event, f"system_logs event lacks {name}: {event}"
    assert event["event_type"] in ("success", "error")
    assert isinstance(event["message"], str) and event["message"]
    assert isinstance(event["timestamp"], datetime)
    assert event["service"] == "excel_export_scheduler"


# --- a scheduled run over the active workspaces ----------------------------------------


def test_scheduled_run_over_active_workspaces(mongo_db, make_env, cli, smtp_server, tmp_path):
    acme = seed_workspace(mongo_db, "Acme Corp", ["a1", "a2"])
    tech = seed_workspace(mongo_db, "Tech Startup", ["t1"])
    silent = seed_workspace(mongo_db, "No Address Ltd", ["n1"])
    inactive = add_workspace(mongo_db, "Old Tenant", status="inactive")
    add_messages(mongo_db, add_chat(mongo_db, inactive), [{"content": "never", "timestamp": utcnow()}])

    env = make_env(
        **{
            f"WORKSPACE_{acme}_EMAIL": "sales@acme.test, ops@acme.test",
            f"WORKSPACE_{tech}_EMAIL": "team@tech.test",
            f"WORKSPACE_{inactive}_EMAIL": "old@old.test",
        }
    )
    result = cli(["export"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    by_recipients = {tuple(sorted(m.rcpt_tos)): m for m in smtp_server.messages}
    assert set(by_recipients) == {("ops@acme.test", "sales@acme.test"), ("team@tech.test",)}
    assert sorted(row[2] for row in mailed_rows(by_recipients[("ops@acme.test", "sales@acme.test")])) == ["a1", "a2"]
    assert [row[2] for row in mailed_rows(by_recipients[("team@tech.test",)])] == ["t1"]

    files = xlsx_files(tmp_path / "exports")
    assert {path.parent.name for path in files} == {"acme_corp", "tech_startup"}
    assert str(silent) in result.stdout and "no email address" in result.stdout
    # The inactive workspace is not part of the run; its address variable is named as matching no active one.
    mentions = [line for line in result.stdout.splitlines() if str(inactive) in line]
    assert len(mentions) == 1 and " WARNING " in mentions[0], mentions
    assert f"WORKSPACE_{inactive}_EMAIL matches no active workspace" in mentions[0]
    assert mongo_db.export_logs.count_documents({"status": "completed"}) == 2
    assert mongo_db.system_logs.count_documents({"kind": "export_run", "trigger": "scheduled"}) == 1

    # The log documents carry every field of the original schema, plus window, trigger and run id.
    run_ids = set()
    for log in mongo_db.export_logs.find():
        _assert_export_log_schema(log)
        assert log["status"] == "completed" and log["error_message"] is None and log["trigger"] == "scheduled"
        expected_to = {str(acme): "sales@acme.test, ops@acme.test", str(tech): "team@tech.test"}[log["workspace_id"]]
        assert sorted(log["email_sent_to"].split(", ")) == sorted(expected_to.split(", "))
        assert log["message_count"] == {str(acme): 2, str(tech): 1}[log["workspace_id"]]
        assert Path(log["file_path"]) in files
        run_ids.add(log["run_id"])
    [event] = mongo_db.system_logs.find({"kind": "export_run"})
    _assert_run_event_schema(event)
    assert event["event_type"] == "success"
    assert run_ids == {event["run_id"]}


# --- workbook content, order, column mapping and timezone --------------------------------


def test_workbook_content_order_mapping_and_timezone(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Format Check")
    chat_id = add_chat(mongo_db, workspace_id, phone_number="+15550001111", customer_phone="+4915112345678")
    moment = utcnow().replace(microsecond=0) - timedelta(minutes=3)
    # Same timestamp, _ids inserted out of order: the file must follow (timestamp, _id).
    low, high = ObjectId("000000000000000000000001"), ObjectId("000000000000000000000002")
    mongo_db.messages.insert_many(
        [
            {
                "_id": high,
                "chat_id": chat_id,
                "direction": "outgoing",
                "is_ai_generated": False,
                "content": "@SUM(A1)",
                "timestamp": moment,
            },
            {
                "_id": ObjectId(),
                "chat_id": chat_id,
                "direction": "outgoing",
                "is_ai_generated": True,
                "content": "ai answer",
                "timestamp": moment + timedelta(seconds=1),
            },
            {
                "_id": low,
                "chat_id": chat_id,
                "direction": "incoming",
                "is_ai_generated": False,
                "content": "=1+1",
                "timestamp": moment,
            },
            {
                "_id": ObjectId(),
                "chat_id": chat_id,
                "direction": "incoming",
                "content": "earliest",
                "timestamp": moment - timedelta(seconds=5),
            },
        ]
    )
    env = make_env(EXPORT_TIMEZONE="Asia/Kolkata", **{f"WORKSPACE_{workspace_id}_EMAIL": "x@format.test"})
    result = cli(["export", "--no-email", "--hours", "1"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    [path] = xlsx_files(Path(env["EXPORT_DIR"]))
    workbook = load_workbook(path)
    sheet = workbook["WhatsApp Messages"]
    header = [cell.value for cell in sheet[1]]
    assert header == [
        "Sender Phone Number",
        "Receiver Phone Number",
        "Message Content",
        "Timestamp",
        "Status",
        "Workspace ID",
    ]
    rows = [list(row) for row in sheet.iter_rows(min_row=2)]
    contents = [row[2].value for row in rows]
    assert contents == ["earliest", "=1+1", "@SUM(A1)", "ai answer"]
    assert [row[4].value for row in rows] == ["received", "received", "sent_by_human", "sent_via_ai"]
    assert [row[0].value for row in rows] == ["+4915112345678", "+4915112345678", "+15550001111", "+15550001111"]
    assert [row[1].value for row in rows] == ["+15550001111", "+15550001111", "+4915112345678", "+4915112345678"]
    assert {row[5].value for row in rows} == {str(workspace_id)}
    for row in rows:
        assert row[2].data_type == "s" and row[0].data_type == "s"
    kolkata = moment.astimezone(ZoneInfo("Asia/Kolkata")).replace(tzinfo=None)
    timestamp_cell = rows[1][3]
    assert timestamp_cell.is_date and timestamp_cell.value == kolkata
    assert timestamp_cell.number_format == "yyyy-mm-dd hh:mm:ss"


# --- consecutive runs: each message exactly once -----------------------------------------


def test_consecutive_runs_deliver_each_message_exactly_once(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Twice")
    chat_id = add_chat(mongo_db, workspace_id)
    now = utcnow()
    add_messages(
        mongo_db,
        chat_id,
        [{"content": f"early-{i}", "timestamp": now - timedelta(minutes=5, seconds=i)} for i in range(3)],
    )
    add_messages(mongo_db, chat_id, [{"content": "inside-lag", "timestamp": now - timedelta(seconds=20)}])
    address = {f"WORKSPACE_{workspace_id}_EMAIL": "twice@ws.test"}

    first = cli(["export"], env=make_env(EXPORT_LAG_SECONDS="60", **address))
    assert first.returncode == 0, first.stdout + first.stderr
    assert sorted(mailed_contents(smtp_server.messages)) == ["early-0", "early-1", "early-2"]

    add_messages(
        mongo_db,
        chat_id,
        [{"content": f"later-{i}", "timestamp": utcnow() - timedelta(milliseconds=50)} for i in range(2)],
    )
    time.sleep(0.1)
    second = cli(["export"], env=make_env(EXPORT_LAG_SECONDS="0", **address))
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(smtp_server.messages) == 2
    assert sorted(row[2] for row in mailed_rows(smtp_server.messages[1])) == ["inside-lag", "later-0", "later-1"]
    contents = mailed_contents(smtp_server.messages)
    assert len(contents) == len(set(contents)) == 6


# --- SMTP down: the window waits for the next run ----------------------------------------


def test_smtp_down_keeps_window_for_next_run(mongo_db, make_env, cli, smtp_server):
    workspace_id = seed_workspace(mongo_db, "Down Time", ["before-1", "before-2"])
    address = {f"WORKSPACE_{workspace_id}_EMAIL": "ops@down.test"}
    dead_port = free_port()

    failed = cli(["export"], env=make_env(SMTP_PORT=str(dead_port), **address))
    assert failed.returncode == 1, failed.stdout + failed.stderr
    log = mongo_db.export_logs.find_one({"status": "failed"})
    assert log is not None and "connect" in log["error_message"].lower()
    _assert_export_log_schema(log)
    event = mongo_db.system_logs.find_one({"kind": "export_run"})
    assert event is not None and event["event_type"] == "error"
    _assert_run_event_schema(event)
    assert Path(log["file_path"]).is_file()
    cursor_after_failure = cursor_of(mongo_db, workspace_id)
    assert cursor_after_failure is not None  # the first window's start is pinned
    assert cursor_after_failure <= min(doc["_id"] for doc in mongo_db.messages.find())

    add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": "after", "timestamp": utcnow()}])
    time.sleep(0.05)
    recovered = cli(["export"], env=make_env(**address))
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert len(smtp_server.messages) == 1
    assert sorted(mailed_contents(smtp_server.messages)) == ["after", "before-1", "before-2"]
    assert mongo_db.export_logs.count_documents({"status": "completed"}) == 1
    assert cursor_of(mongo_db, workspace_id) > cursor_after_failure


# --- simultaneous runs ------------------------------------------------------------------


def test_two_simultaneous_runs_send_every_message_once(mongo_db, make_env, tmp_path):
    env_vars: dict[str, str] = {}
    expected: list[str] = []
    for number in range(4):
        contents = [f"w{number}-m{i}" for i in range(5)]
        expected.extend(contents)
        workspace_id = seed_workspace(mongo_db, f"Parallel {number}", contents)
        env_vars[f"WORKSPACE_{workspace_id}_EMAIL"] = f"ws{number}@parallel.test"
    # Each run's first mail is held until both runs are connected: the runs overlap for certain,
    # and while one holds its first workspace's lease the other has to skip that workspace.
    with GatedSmtpServer(parties=2) as gated:
        env = make_env(**smtp_env(gated), **env_vars)
        processes = [start_cli(["export", "--json"], env, tmp_path) for _ in range(2)]
        outputs = [process.communicate(timeout=120) for process in processes]
        for process, (stdout, stderr) in zip(processes, outputs, strict=True):
            assert process.returncode == 0, stdout + stderr
            assert "Traceback" not in stderr
        mails = list(gated.messages)
        assert not gated.gate_timed_out, "the two runs never had an SMTP connection open at the same time"
    documents = [parse_json(subprocess.CompletedProcess([], 0, stdout, stderr)) for stdout, stderr in outputs]
    assert runs_overlapped(documents)
    assert all(any(ws["outcome"] == "completed" for ws in document["workspaces"]) for document in documents), (
        "both runs exported something"
    )
    assert lease_skips(documents), "one run met the other's lease"
    assert sorted(mailed_contents(mails)) == sorted(expected)  # every message exactly once
    assert sum(document["message_count"] for document in documents) == len(expected)


# --- manual runs: --hours, --since/--until, --dry-run, --workspace ------------------------


def test_manual_hours_email_leaves_the_cursor(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Manual")
    chat_id = add_chat(mongo_db, workspace_id)
    now = utcnow()
    add_messages(
        mongo_db,
        chat_id,
        [
            {"content": "old-3h", "timestamp": now - timedelta(hours=3)},
            {"content": "recent", "timestamp": now - timedelta(minutes=2)},
            {"content": "too-old", "timestamp": now - timedelta(hours=30)},
        ],
    )
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "configured@manual.test"})

    manual = cli(["export", "--workspace", str(workspace_id), "--hours", "24", "--email", "boss@other.test"], env=env)
    assert manual.returncode == 0, manual.stdout + manual.stderr
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["boss@other.test"]
    assert sorted(mailed_contents([mail])) == ["old-3h", "recent"]
    assert cursor_of(mongo_db, workspace_id) is None
    assert mongo_db.export_logs.find_one({"trigger": "manual"})["status"] == "completed"

    scheduled = cli(["export"], env=env)
    assert scheduled.returncode == 0, scheduled.stdout + scheduled.stderr
    assert smtp_server.messages[1].rcpt_tos == ["configured@manual.test"]
    assert mailed_contents([smtp_server.messages[1]]) == ["recent"]


def test_manual_since_until_is_half_open(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Window")
    chat_id = add_chat(mongo_db, workspace_id)
    start = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
    add_messages(
        mongo_db,
        chat_id,
        [
            {"content": "before", "timestamp": start - timedelta(milliseconds=1)},
            {"content": "at-start", "timestamp": start},
            {"content": "middle", "timestamp": start + timedelta(minutes=30)},
            {"content": "last-ms", "timestamp": start + timedelta(hours=1) - timedelta(milliseconds=1)},
            {"content": "at-end", "timestamp": start + timedelta(hours=1)},
        ],
    )
    # Naive times are in EXPORT_TIMEZONE: 11:00 Berlin (winter) is 10:00 UTC.
    env = make_env(EXPORT_TIMEZONE="Europe/Berlin")
    result = cli(
        ["export", "-w", str(workspace_id), "--since", "2026-01-15T10:00", "--until", "2026-01-15T11:00", "--no-email"],
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [path] = xlsx_files(Path(env["EXPORT_DIR"]))
    assert [row[2] for row in sheet_rows(path)] == ["at-start", "middle", "last-ms"]
    assert smtp_server.messages == []
    assert mongo_db.export_logs.count_documents({}) == 0  # --no-email: nothing delivered, nothing logged


def test_dry_run_changes_nothing(mongo_db, make_env, cli, smtp_server):
    workspace_id = seed_workspace(mongo_db, "Dry", ["d1", "d2", "d3"])
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "dry@dry.test"})
    before = {name: list(mongo_db[name].find()) for name in mongo_db.list_collection_names()}

    result = cli(["export", "--dry-run", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    [workspace] = document["workspaces"]
    assert workspace["outcome"] == "dry_run" and workspace["message_count"] == 3
    assert workspace["by_status"]["received"] == 3
    assert not Path(env["EXPORT_DIR"]).exists()
    assert smtp_server.messages == [] and smtp_server.connection_count == 0
    after = {name: list(mongo_db[name].find()) for name in mongo_db.list_collection_names()}
    assert after == before


def test_unknown_or_malformed_workspace_is_a_usage_error(mongo_db, make_env, cli, smtp_server):
    add_workspace(mongo_db, "Exists")
    for bad in (str(ObjectId()), "not-an-id"):
        result = cli(["export", "--workspace", bad, "--hours", "1", "--no-email"])
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        message = result.stderr.strip()
        assert bad in message and len(message.splitlines()) == 1


# --- no new messages -------------------------------------------------------------------


def test_no_new_messages_advances_the_cursor(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Quiet")
    add_chat(mongo_db, workspace_id)
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "quiet@quiet.test"})
    first = cli(["export"], env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    first_mark = cursor_of(mongo_db, workspace_id)
    settle_arrivals()  # window ends are whole seconds (ObjectId time)
    second = cli(["export"], env=env)
    assert second.returncode == 0
    assert first_mark is not None and cursor_of(mongo_db, workspace_id) > first_mark
    assert smtp_server.messages == [] and xlsx_files(Path(env["EXPORT_DIR"])) == []


# --- files: permissions, names, never overwritten ----------------------------------------


def test_file_permissions_names_and_no_overwrite(mongo_db, make_env, cli, smtp_server):
    first = seed_workspace(mongo_db, "Acme Corp", ["x"])
    second = seed_workspace(mongo_db, "acme-corp!", ["y"])
    env = make_env(**{f"WORKSPACE_{first}_EMAIL": "a@a.test", f"WORKSPACE_{second}_EMAIL": "b@b.test"})
    for _ in range(2):  # the second run in the same minute must not overwrite the first files
        result = cli(["export", "--hours", "1", "--no-email"], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
    export_dir = Path(env["EXPORT_DIR"])
    files = xlsx_files(export_dir)
    assert len(files) == 4
    folders = {path.parent for path in files}
    assert len(folders) == 2
    assert {folder.name for folder in folders} == {"acme_corp", f"acme_corp_{str(second)[-8:]}"} or {
        folder.name for folder in folders
    } == {"acme_corp", f"acme_corp_{str(first)[-8:]}"}
    for path in files:
        assert FILE_NAME.match(path.name), path.name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for folder in folders:
        assert len(list(folder.glob("*.xlsx"))) == 2


# --- the email: format, one SMTP connection per run --------------------------------------


def test_email_format_and_one_connection_per_run(mongo_db, make_env, cli, smtp_server):
    names = ["Mail One", "Mail Two", "Mail Three"]
    env_vars = {}
    for name in names:
        workspace_id = seed_workspace(mongo_db, name, [f"{name}-1", f"{name}-2"])
        env_vars[f"WORKSPACE_{workspace_id}_EMAIL"] = f"{name.split()[1].lower()}@mail.test"
    # TZ=UTC for the process: local times must come from EXPORT_TIMEZONE, never from the host's zone.
    env = make_env(EXPORT_TIMEZONE="America/New_York", EXPORT_INTERVAL_MINUTES="60", TZ="UTC", **env_vars)
    before = datetime.now(UTC)
    result = cli(["export"], env=env)
    after = datetime.now(UTC)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(smtp_server.messages) == 3
    assert smtp_server.connection_count == 1

    message = next(m.message() for m in smtp_server.messages if m.rcpt_tos == ["two@mail.test"])
    subject = re.fullmatch(r"WhatsApp Messages Export - Mail Two - (\d{4}-\d{2}-\d{2} \d{2}:\d{2})", message["Subject"])
    assert subject, message["Subject"]
    new_york = ZoneInfo("America/New_York")

    def during_run(local_text: str, fmt: str) -> bool:
        """The local New York time `local_text` names a moment of the run (±1 minute for truncation and skew)."""
        moment = datetime.strptime(local_text, fmt).replace(tzinfo=new_york)
        return before - timedelta(minutes=1) <= moment <= after + timedelta(minutes=1)

    assert during_run(subject.group(1), "%Y-%m-%d %H:%M"), (subject.group(1), before, after)
    [(filename, content_type, payload)] = attachments(message)
    assert content_type == XLSX_MIME and FILE_NAME.match(filename)
    # The file name carries the same local date and minute.
    stamp = re.search(r"_(\d{4}-\d{2}-\d{2}_\d{2}-\d{2})", filename)
    assert stamp and during_run(stamp.group(1), "%Y-%m-%d_%H-%M"), filename
    assert [row[2] for row in sheet_rows(payload)] == ["Mail Two-1", "Mail Two-2"]
    body = plain_body(message)
    assert "Mail Two" in body and "America/New_York" in body and filename in body
    assert "Total messages: 2" in body and "received: 2" in body
    window = re.search(
        r"Messages received or sent between (\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2}) and (?:(\d{4}-\d{2}-\d{2}) )?"
        r"(\d{2}:\d{2}:\d{2}) "
        r"\(America/New_York\)",
        body,
    )
    assert window, body
    assert "Timestamp column are in America/New_York" in body
    start_text = f"{window.group(1)} {window.group(2)}"
    end_text = f"{window.group(3) or window.group(1)} {window.group(4)}"
    # First scheduled window: [run time - EXPORT_INTERVAL_MINUTES, run time - EXPORT_LAG_SECONDS (0)).
    assert during_run(end_text, "%Y-%m-%d %H:%M:%S"), (end_text, before, after)
    start = datetime.strptime(start_text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=new_york)
    end = datetime.strptime(end_text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=new_york)
    assert end.astimezone(UTC) - start.astimezone(UTC) == timedelta(minutes=60)  # real time, across DST too


def test_missing_password_fails_fast_instead_of_prompting(mongo_db, make_env, cli, smtp_server):
    workspace_id = seed_workspace(mongo_db, "No Password", ["p"])
    env = make_env(SMTP_PASSWORD=None, **{f"WORKSPACE_{workspace_id}_EMAIL": "p@p.test"})
    started = time.monotonic()
    result = cli(["export"], env=env, timeout=30)
    assert time.monotonic() - started < 20
    assert result.returncode == 2, result.stdout + result.stderr
    assert "SMTP_PASSWORD" in result.stderr and "Traceback" not in result.stderr
    assert smtp_server.connection_count == 0


# --- exit codes and configuration sources -----------------------------------------------


def test_mongodb_unreachable_exits_3_quickly(make_env, cli, smtp_server):
    env = make_env(MONGODB_URI=f"mongodb://wa:topsecret@127.0.0.1:{free_port()}/?directConnection=true")
    started = time.monotonic()
    result = cli(["export"], env=env, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 3, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MongoDB is unreachable" in lines[0]
    assert "topsecret" not in result.stdout + result.stderr


def test_bad_setting_exits_2_naming_it(make_env, cli, smtp_server):
    result = cli(["export"], env=make_env(EXPORT_TIMEZONE="Mars/Base"))
    assert result.returncode == 2
    assert "EXPORT_TIMEZONE" in result.stderr and "Mars/Base" in result.stderr
    assert "Traceback" not in result.stderr


def test_env_file_and_real_environment_precedence(mongo_db, make_env, cli, smtp_server, tmp_path):
    workspace_id = seed_workspace(mongo_db, "Env File", ["e"])
    env = make_env()
    env_file = tmp_path / "custom.env"
    env_file.write_text(f"WORKSPACE_{workspace_id}_EMAIL=fromfile@env.test\nEXPORT_TIMEZONE=Mars/Base\n")
    os.chmod(env_file, 0o600)
    env["EXPORT_TIMEZONE"] = "UTC"  # the real environment wins over the file
    result = cli(["export", "--env-file", str(env_file)], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert smtp_server.messages[0].rcpt_tos == ["fromfile@env.test"]
