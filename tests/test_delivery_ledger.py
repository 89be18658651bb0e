"""The delivery ledger through the CLI: what each email carried, `resend` of exactly that, `verify` of a file.

Everything runs `wa-export` against the test MongoDB and SMTP servers. A message's arrival is its `_id`;
`_id=ObjectId()` makes a message that arrives now whatever its `timestamp` says (a late arrival).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from helpers import attachments, one_stderr_line, parse_json
from seeding import add_chat, add_messages, add_workspace, utcnow

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
