"""The delivery ledger through the CLI: what each email carried, `resend` of exactly that, `verify` of a file.

Everything runs `wa-export` against the test MongoDB and SMTP servers. A message's arrival is its `_id`;
`_id=ObjectId()` makes a message that arrives now whatever its `timestamp` says (a late arrival).
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from helpers import attachments, commands_of, mailed_rows, one_stderr_line, parse_json, plain_body, xlsx_files
from seeding import add_chat, add_messages, add_workspace, message_doc, settle_arrivals, utcnow
from servers import free_port
from wa_export.commands import resend as resend_command
from wa_export.settings import load_settings

RECIPIENTS = ["boss@ledger.test", "ops@ledger.test"]
REPEATS = "whose messages were already delivered."
LEDGER_INDEX = "db.export_logs.createIndex({ attachment_sha256: 1 })"


def _tenant(db: Any, name: str = "Ledger Co") -> tuple[ObjectId, ObjectId, dict[str, str]]:
    workspace_id = add_workspace(db, name)
    chat_id = add_chat(db, workspace_id)
    return workspace_id, chat_id, {f"WORKSPACE_{workspace_id}_EMAIL": ", ".join(RECIPIENTS)}


def _seed(db: Any, chat_id: ObjectId, *contents: str, minutes_ago: float = 5) -> list[ObjectId]:
    start = utcnow() - timedelta(minutes=minutes_ago)
    directions = ("incoming", "outgoing")
    return add_messages(
        db,
        chat_id,
        [
            {
                "content": text,
                "timestamp": start + timedelta(seconds=index),
                "direction": directions[index % 2],
                "is_ai_generated": index % 3 == 0,
            }
            for index, text in enumerate(contents)
        ],
    )


def _ok(result: Any) -> Any:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _attachment(mail: Any) -> tuple[str, bytes]:
    [(name, _, payload)] = attachments(mail.message())
    return name, payload


def _entries(db: Any, **query: Any) -> list[dict[str, Any]]:
    return list(db.export_logs.find(query).sort([("created_at", 1), ("_id", 1)]))


def _raw_state(db: Any) -> list[bytes]:
    """Every export_state document as the server stores it: the bytes, in `_id` order."""
    raw = db.get_collection("export_state", codec_options=CodecOptions(document_class=RawBSONDocument))
    return [document.raw for document in raw.find().sort("_id", 1)]


# --- 1. the ledger entry of every emailed workbook ------------------------------------------------


def test_each_emailed_workbook_records_its_hash_size_and_name_and_logs_shows_its_id(
    mongo_db, make_env, cli, smtp_server
):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "one", "two", "three", "four", "five")
    env = make_env(EXPORT_MAX_ROWS_PER_EMAIL="2", **address)
    _ok(cli(["export"], env=env))
    assert len(smtp_server.messages) == 3  # three parts: each its own entry with its own file
    entries = _entries(mongo_db)
    assert [entry["part"] for entry in entries] == [1, 2, 3]
    for mail, entry in zip(smtp_server.messages, entries, strict=True):
        name, payload = _attachment(mail)
        assert entry["attachment_sha256"] == hashlib.sha256(payload).hexdigest()
        assert entry["attachment_bytes"] == len(payload)
        assert entry["file_name"] == name == Path(entry["file_path"]).name

    shown = _ok(cli(["logs"], env=env)).stdout
    for entry in entries:
        assert len([line for line in shown.splitlines() if str(entry["_id"]) in line]) == 1
    as_json = parse_json(_ok(cli(["logs", "--json"], env=env)))
    assert {item["id"] for item in as_json["entries"]} == {str(entry["_id"]) for entry in entries}


def test_a_manual_export_records_its_attachment_too(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "manual-1", "manual-2")
    _ok(cli(["export", "--workspace", str(workspace_id), "--hours", "1"], env=make_env(**address)))
    [entry] = _entries(mongo_db)
    name, payload = _attachment(smtp_server.messages[0])
    assert (entry["trigger"], entry["file_name"], entry["attachment_bytes"]) == ("manual", name, len(payload))
    assert entry["attachment_sha256"] == hashlib.sha256(payload).hexdigest()


# --- 2. resend: exactly the rows that went out ------------------------------------------------------


def test_resend_mails_the_original_rows_again_after_late_arrivals_went_out_later(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _tenant(mongo_db)
    original_ids = _seed(mongo_db, chat_id, "first", "second", "third", minutes_ago=6)
    env = make_env(**address)
    _ok(cli(["export"], env=env))
    [original] = _entries(mongo_db)
    # Late arrivals whose timestamps lie inside the first email's window, and one new message:
    # they go out in the second email, never in a rebuild of the first.
    first_moment = mongo_db.messages.find_one({"_id": original_ids[0]})["timestamp"]
    mongo_db.messages.insert_many(
        [
            message_doc(
                chat_id, _id=ObjectId(), content="late-inside", timestamp=first_moment + timedelta(milliseconds=500)
            ),
            message_doc(chat_id, _id=ObjectId(), content="late-before", timestamp=first_moment - timedelta(hours=1)),
            message_doc(chat_id, content="new"),
        ]
    )
    settle_arrivals()
    _ok(cli(["export"], env=env))
    assert sorted(row[2] for row in mailed_rows(smtp_server.messages[1])) == ["late-before", "late-inside", "new"]
    state_before = _raw_state(mongo_db)

    result = _ok(cli(["resend", str(original["_id"]), "--json"], env=env))

    assert len(smtp_server.messages) == 3
    first, resent = smtp_server.messages[0], smtp_server.messages[2]
    assert sorted(resent.rcpt_tos) == sorted(first.rcpt_tos) == RECIPIENTS
    assert resent.message()["Subject"] == "[Re-sent] " + first.message()["Subject"]
    body = plain_body(resent.message())
    assert "This email repeats the export of" in body and REPEATS in body
    assert "the original export held" not in body  # the counts agree
    assert mailed_rows(resent) == mailed_rows(first)  # same rows, same order, same cells
    assert [row[2] for row in mailed_rows(resent)] == ["first", "second", "third"]

    document = parse_json(result)
    [again] = _entries(mongo_db, trigger="resend")
    assert again["resend_of"] == original["_id"] and again["status"] == "completed"
    assert str(again["_id"]) == document["log_id"] and document["resend_of"] == str(original["_id"])
    assert document["workspace_id"] == str(original["workspace_id"]) and document["recorded_message_count"] == 3
    assert document["attachment_sha256"] == again["attachment_sha256"]
    assert (again["window_start_key"], again["window_end_key"]) == (
        original["window_start_key"],
        original["window_end_key"],
    )
    assert again["message_count"] == original["message_count"] == 3
    assert again["run_id"] and again["run_id"] != original["run_id"]
    name, payload = _attachment(resent)
    assert again["attachment_sha256"] == hashlib.sha256(payload).hexdigest() and again["file_name"] == name
    # The copy reaches the recipient under the original's name, not the kept file's "_2" one.
    assert name == original["file_name"] == _attachment(first)[0] and f"File: {name}" in body
    assert _raw_state(mongo_db) == state_before  # no cursor, lease or intent moved

    # The next scheduled run has nothing to send: the resend did not disturb delivery.
    settle_arrivals()
    assert parse_json(_ok(cli(["export", "--json"], env=env)))["message_count"] == 0
    assert len(smtp_server.messages) == 3


def test_resend_sends_no_command_to_export_state(mongo_db, make_env, cli, smtp_server, tmp_path, monkeypatch):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "only")
    env = make_env(**address)
    _ok(cli(["export"], env=env))
    [original] = _entries(mongo_db)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=env)
    with commands_of(monkeypatch, resend_command, settings) as log:
        result = resend_command.resend(settings, str(original["_id"]), ())
    assert result.error is None and result.log_id is not None
    touched = {collection for _, collection, _ in log.commands}
    assert "export_state" not in touched and {"export_logs", "messages", "chats"} <= touched


def test_resend_of_one_part_rebuilds_that_part(mongo_db, make_env, cli, smtp_server):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "p1", "p2", "p3", "p4", "p5")
    env = make_env(EXPORT_MAX_ROWS_PER_EMAIL="2", **address)
    _ok(cli(["export"], env=env))
    second = _entries(mongo_db)[1]
    _ok(cli(["resend", str(second["_id"])], env=env))
    original, resent = smtp_server.messages[1], smtp_server.messages[3]
    assert resent.message()["Subject"] == "[Re-sent] " + original.message()["Subject"]
    assert resent.message()["Subject"].endswith("(part 2 of 3)")
    assert mailed_rows(resent) == mailed_rows(original)
    assert "Part: 2 of 3" in plain_body(resent.message())


def test_a_message_deleted_since_is_said_with_both_counts(mongo_db, make_env, cli, smtp_server):
    _, chat_id, address = _tenant(mongo_db)
    ids = _seed(mongo_db, chat_id, "kept-1", "deleted", "kept-2")
    env = make_env(**address)
    _ok(cli(["export"], env=env))
    [original] = _entries(mongo_db)
    mongo_db.messages.delete_one({"_id": ids[1]})
    result = _ok(cli(["resend", str(original["_id"])], env=env))
    body = plain_body(smtp_server.messages[1].message())
    assert "This workbook holds 2 messages where the original export held 3" in body
    assert "This workbook holds 2 messages where the original export held 3" in result.stdout
    assert [row[2] for row in mailed_rows(smtp_server.messages[1])] == ["kept-1", "kept-2"]
    [again] = _entries(mongo_db, trigger="resend")
    assert again["message_count"] == 2


def test_a_resend_the_server_refuses_records_nothing_and_keeps_no_file(mongo_db, make_env, cli, smtp_server, tmp_path):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "once")
    _ok(cli(["export"], env=make_env(**address)))
    [original] = _entries(mongo_db)
    files = xlsx_files(tmp_path / "exports")
    failed = cli(["resend", str(original["_id"])], env=make_env(SMTP_PORT=str(free_port()), **address))
    assert failed.returncode == 1 and "re-sending export" in one_stderr_line(failed.stderr)
    assert len(_entries(mongo_db)) == 1 and xlsx_files(tmp_path / "exports") == files


def test_health_does_not_take_a_resend_for_the_recovery_of_a_failing_workspace(mongo_db, make_env, cli, smtp_server):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "delivered")
    env = make_env(**address)
    _ok(cli(["export"], env=env))
    [delivered] = _entries(mongo_db)
    add_messages(mongo_db, chat_id, [{"content": "stuck", "_id": ObjectId()}])  # arrives after the first run
    assert cli(["export"], env=make_env(SMTP_PORT=str(free_port()), **address)).returncode == 1
    _ok(cli(["resend", str(delivered["_id"])], env=env))
    checks = {check["name"]: check for check in parse_json(cli(["health", "--json"], env=env))["checks"]}
    assert checks["failed_exports"]["status"] == "failed" and "still failing" in checks["failed_exports"]["reason"]


def test_a_date_arrival_field_is_resent_by_its_dates_and_refused_once_the_field_is_id(
    mongo_db, make_env, cli, smtp_server
):
    _, chat_id, address = _tenant(mongo_db)
    written = utcnow() - timedelta(minutes=5)
    mongo_db.messages.insert_many(
        [
            {
                **message_doc(chat_id, content=f"dated-{n}", timestamp=written + timedelta(seconds=n)),
                "created_at": written + timedelta(seconds=n),
            }
            for n in range(2)
        ]
    )
    dated = make_env(EXPORT_ARRIVAL_FIELD="created_at", **address)
    _ok(cli(["export"], env=dated))
    [original] = _entries(mongo_db)
    assert isinstance(original["window_start_key"], datetime)
    _ok(cli(["resend", str(original["_id"])], env=dated))
    assert mailed_rows(smtp_server.messages[1]) == mailed_rows(smtp_server.messages[0])
    refused = cli(["resend", str(original["_id"])], env=make_env(**address))
    assert refused.returncode == 1 and "EXPORT_ARRIVAL_FIELD is now _id" in one_stderr_line(refused.stderr)
    assert len(smtp_server.messages) == 2


# --- 3. --to, the allow-list, --dry-run --------------------------------------------------------------


def test_to_sends_only_there_and_stays_under_the_allowed_domains(mongo_db, make_env, cli, smtp_server):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "hello")
    env = make_env(EXPORT_ALLOWED_EMAIL_DOMAINS="ledger.test", **address)
    _ok(cli(["export"], env=env))
    [original] = _entries(mongo_db)

    refused = cli(["resend", str(original["_id"]), "--to", "someone@elsewhere.test"], env=env)
    assert refused.returncode == 2
    assert "EXPORT_ALLOWED_EMAIL_DOMAINS" in one_stderr_line(refused.stderr)
    assert len(smtp_server.messages) == 1 and len(_entries(mongo_db)) == 1

    _ok(cli(["resend", str(original["_id"]), "--to", "auditor@ledger.test"], env=env))
    assert len(smtp_server.messages) == 2
    resent = smtp_server.messages[1]
    assert resent.rcpt_tos == ["auditor@ledger.test"] and resent.message()["To"] == "auditor@ledger.test"
    [again] = _entries(mongo_db, trigger="resend")
    assert again["email_sent_to"] == "auditor@ledger.test"


def test_dry_run_counts_and_sends_and_writes_nothing(mongo_db, make_env, cli, smtp_server, tmp_path):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "a", "b")
    env = make_env(**address)
    _ok(cli(["export"], env=env))
    [original] = _entries(mongo_db)
    files = xlsx_files(tmp_path / "exports")
    result = parse_json(_ok(cli(["resend", str(original["_id"]), "--dry-run", "--json"], env=env)))
    assert result["dry_run"] is True and result["message_count"] == 2 and result["log_id"] is None
    assert result["recipients"] == RECIPIENTS
    assert len(smtp_server.messages) == 1
    assert len(_entries(mongo_db)) == 1 and xlsx_files(tmp_path / "exports") == files


# --- 4. a manual export's entry ----------------------------------------------------------------------


def test_resend_of_a_manual_export_rebuilds_its_timestamp_window(mongo_db, make_env, cli, smtp_server):
    workspace_id, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "in-window-1", "in-window-2", minutes_ago=30)
    env = make_env(**address)
    since = (utcnow() - timedelta(hours=1)).isoformat()
    until = (utcnow() - timedelta(minutes=10)).isoformat()
    _ok(cli(["export", "--workspace", str(workspace_id), "--since", since, "--until", until], env=env))
    [original] = _entries(mongo_db)
    _seed(mongo_db, chat_id, "after-the-window")  # a new message, timestamped after --until
    _ok(cli(["resend", str(original["_id"])], env=env))
    first, resent = smtp_server.messages
    assert mailed_rows(resent) == mailed_rows(first)
    assert [row[2] for row in mailed_rows(resent)] == ["in-window-1", "in-window-2"]
    assert resent.message()["Subject"].startswith("[Re-sent] ")
    [again] = _entries(mongo_db, trigger="resend")
    assert (again["window_start"], again["window_end"]) == (original["window_start"], original["window_end"])


# --- 5. refusals -------------------------------------------------------------------------------------


def test_a_malformed_id_is_a_usage_error_and_an_unknown_one_a_failure(mongo_db, make_env, cli, smtp_server):
    add_workspace(mongo_db, "Somebody")
    env = make_env()
    malformed = cli(["resend", "65a1b2c3d4e5"], env=env)
    assert malformed.returncode == 2 and "24 hexadecimal characters" in one_stderr_line(malformed.stderr)
    unknown = cli(["resend", str(ObjectId())], env=env)
    assert unknown.returncode == 1 and "No export has id" in one_stderr_line(unknown.stderr)
    as_json = cli(["resend", str(ObjectId()), "--json"], env=env)
    assert as_json.returncode == 1 and parse_json(as_json)["exit_code"] == 1
    assert smtp_server.messages == []


def test_an_export_that_failed_is_refused_saying_the_next_scheduled_run_delivers_it(
    mongo_db, make_env, cli, smtp_server
):
    _, chat_id, address = _tenant(mongo_db)
    _seed(mongo_db, chat_id, "undelivered")
    down = make_env(SMTP_PORT=str(free_port()), **address)
    assert cli(["export"], env=down).returncode == 1
    [failed] = _entries(mongo_db)
    assert failed["status"] == "failed"
    refused = cli(["resend", str(failed["_id"])], env=make_env(**address))
    assert refused.returncode == 1
    line = one_stderr_line(refused.stderr)
    assert "never delivered (status failed)" in line and "the next scheduled run delivers" in line
    assert smtp_server.messages == [] and len(_entries(mongo_db)) == 1


# --- 6. verify -----------------------------------------------------------------------------------------


def test_verify_names_the_export_of_a_received_file_and_nothing_for_a_changed_one(
    mongo_db, make_env, cli, smtp_server, tmp_path
):
    workspace_id, chat_id, address = _tenant(mongo_db, "Verify Ltd")
    _seed(mongo_db, chat_id, "proof")
    env = make_env(**address)
    _ok(cli(["export"], env=env))
    [entry] = _entries(mongo_db)
    name, payload = _attachment(smtp_server.messages[0])
    received = tmp_path / "inbox" / name
    received.parent.mkdir()
    received.write_bytes(payload)

    found = _ok(cli(["verify", str(received)], env=env)).stdout
    assert "Verify Ltd" in found and str(workspace_id) in found and str(entry["_id"]) in found
    assert "boss@ledger.test, ops@ledger.test" in found and "Messages: 1, arrived from" in found
    document = parse_json(_ok(cli(["verify", str(received), "--json"], env=env)))
    assert document["found"] is True and document["sha256"] == hashlib.sha256(payload).hexdigest()
    [facts] = document["entries"]
    assert (facts["id"], facts["workspace_id"], facts["message_count"]) == (str(entry["_id"]), str(workspace_id), 1)
    assert facts["range"]["kind"] == "arrival" and facts["range"]["start"] == str(entry["window_start_key"])

    changed = tmp_path / "changed.xlsx"
    changed.write_bytes(payload[:100] + bytes([payload[100] ^ 0x01]) + payload[101:])
    not_found = cli(["verify", str(changed)], env=env)
    assert not_found.returncode == 1 and "No export of this file is recorded" in not_found.stderr
    missing = cli(["verify", str(tmp_path / "nowhere.xlsx")], env=env)
    assert missing.returncode == 2 and "does not exist" in one_stderr_line(missing.stderr)


def test_health_names_the_ledger_index_like_the_others(mongo_db, make_env, cli, smtp_server):
    add_workspace(mongo_db, "Indexed")
    env = make_env()
    checks = {check["name"]: check for check in parse_json(cli(["health", "--json"], env=env))["checks"]}
    assert LEDGER_INDEX in checks["indexes"]["details"]["commands"]
    mongo_db.export_logs.create_index([("attachment_sha256", 1)])
    checks = {check["name"]: check for check in parse_json(cli(["health", "--json"], env=env))["checks"]}
    assert LEDGER_INDEX not in checks["indexes"].get("details", {}).get("commands", [])
