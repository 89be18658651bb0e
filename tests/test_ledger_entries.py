"""The delivery ledger's pieces: a file's fingerprint, an entry read back with its range, and who may get a resend.

The commands that use them (`resend`, `verify`) are tested through the CLI in test_delivery_ledger.py.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from wa_export.commands import logs, resend
from wa_export.errors import ExitCode, UsageProblem
from wa_export.settings import Settings, load_settings
from wa_export.store.logs import RecordedRange, entries_with_sha256, entry_by_id, read_entry
from wa_export.workbook.fingerprint import fingerprint

WORKSPACE = "65a1b2c3d4e5f60718293a4b"
SENT = datetime(2026, 1, 5, 12, 0, 3, tzinfo=UTC)


def _document(**fields: object) -> dict[str, object]:
    """An export_logs entry as this tool writes one for an emailed scheduled part."""
    document: dict[str, object] = {
        "_id": ObjectId(),
        "workspace_id": WORKSPACE,
        "workspace_name": "Acme",
        "export_type": "whatsapp_messages",
        "export_timestamp": SENT - timedelta(seconds=3),
        "message_count": 2,
        "file_path": "/exports/acme/acme_whatsapp_messages_2026-01-05_12-00.xlsx",
        "email_sent_to": "a@acme.test, b@acme.test",
        "status": "completed",
        "error_message": None,
        "created_at": SENT - timedelta(seconds=1),
        "updated_at": SENT,
        "window_start": SENT - timedelta(minutes=15),
        "window_end": SENT - timedelta(minutes=1),
        "window_start_key": ObjectId.from_datetime(SENT - timedelta(minutes=15)),
        "window_end_key": ObjectId.from_datetime(SENT - timedelta(minutes=1)),
        "part": 1,
        "parts": 1,
        "trigger": "scheduled",
        "run_id": "host-1-abc",
        "file_name": "acme_whatsapp_messages_2026-01-05_12-00.xlsx",
        "attachment_sha256": "ab" * 32,
        "attachment_bytes": 5120,
    }
    document.update(fields)
    return {key: value for key, value in document.items() if value is not _ABSENT}


_ABSENT = object()


def _settings(**environ: str) -> Settings:
    return load_settings(None, environ={"MONGODB_DATABASE": "whatsapp", **environ})


# --- the fingerprint -------------------------------------------------------------------------------


def test_the_fingerprint_is_the_sha256_of_every_byte_and_the_size_and_name(tmp_path):
    content = os.urandom(3 * 1024 * 1024 + 7)  # several of file_digest's chunks, and a partial one
    path = tmp_path / "acme_whatsapp_messages_2026-01-05_12-00.xlsx"
    path.write_bytes(content)
    found = fingerprint(path)
    assert found.sha256 == hashlib.sha256(content).hexdigest()
    assert (found.size, found.file_name) == (len(content), path.name)
    path.write_bytes(content[:-1] + bytes([content[-1] ^ 1]))  # one bit of the last byte
    assert fingerprint(path).sha256 != found.sha256


def test_a_directory_or_a_named_pipe_is_no_file_to_fingerprint(tmp_path):
    with pytest.raises(IsADirectoryError):
        fingerprint(tmp_path)
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match="not a regular file"):  # refused without waiting for a writer
        fingerprint(pipe)


# --- an entry read back ----------------------------------------------------------------------------


def test_a_scheduled_entry_reads_back_its_arrival_keys_recipients_and_attachment():
    document = _document()
    entry = read_entry(document)
    assert entry.recorded_range == RecordedRange("arrival", document["window_start_key"], document["window_end_key"])
    assert entry.recipients == ("a@acme.test", "b@acme.test")
    assert (entry.attachment_sha256, entry.attachment_bytes, entry.file_name) == (
        "ab" * 32,
        5120,
        "acme_whatsapp_messages_2026-01-05_12-00.xlsx",
    )
    assert entry.sent_at == SENT  # accepted when it turned completed
    assert (entry.part, entry.parts, entry.message_count) == (1, 1, 2)


def test_a_manual_entry_reads_back_its_timestamp_window():
    start, end = SENT - timedelta(hours=24), SENT
    entry = read_entry(
        _document(window_start_key=_ABSENT, window_end_key=_ABSENT, window_start=start, window_end=end, part=_ABSENT)
    )
    assert entry.recorded_range == RecordedRange("timestamp", start, end)
    assert entry.part is None


def test_date_keys_are_a_range_but_mixed_or_missing_ones_are_not():
    low, high = SENT - timedelta(minutes=15), SENT
    assert read_entry(_document(window_start_key=low, window_end_key=high)).recorded_range == RecordedRange(
        "arrival", low, high
    )
    mixed = read_entry(_document(window_end_key=high))  # an ObjectId start, a date end
    assert mixed.recorded_range is not None and mixed.recorded_range.kind == "timestamp"
    original = read_entry(
        _document(window_start_key=_ABSENT, window_end_key=_ABSENT, window_start=_ABSENT, window_end=_ABSENT)
    )
    assert original.recorded_range is None


def test_fields_of_the_wrong_type_read_as_absent():
    entry = read_entry(
        _document(message_count="2", attachment_bytes=True, email_sent_to=["a@acme.test"], resend_of="x", part=1.0)
    )
    assert (entry.message_count, entry.attachment_bytes, entry.recipients, entry.resend_of, entry.part) == (
        0,
        None,
        (),
        None,
        None,
    )


def test_entries_are_found_by_id_and_by_hash_oldest_first(mongo_db):
    original = _document(created_at=SENT - timedelta(hours=1))
    later = _document(attachment_sha256="cd" * 32)
    same_file = _document(created_at=SENT, trigger="resend", resend_of=original["_id"])
    mongo_db.export_logs.insert_many([same_file, later, original])
    assert entry_by_id(mongo_db.export_logs, later["_id"]) == read_entry(later)
    assert entry_by_id(mongo_db.export_logs, ObjectId()) is None
    found = entries_with_sha256(mongo_db.export_logs, ("AB" * 32))  # hex in either case
    assert [entry.id for entry in found] == [original["_id"], same_file["_id"]]
    assert found[1].resend_of == original["_id"]
    assert entries_with_sha256(mongo_db.export_logs, "ef" * 32) == []


# --- resend's rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["", "65a1b2c3d4e5f60718293a4", "65a1b2c3d4e5f60718293a4bz", "xyz1b2c3d4e5f60718293a4b"]
)
def test_a_log_id_is_24_hexadecimal_characters(raw):
    with pytest.raises(UsageProblem, match="expected 24 hexadecimal characters") as caught:
        resend.parse_log_id(raw)
    assert caught.value.exit_code == ExitCode.USAGE


def test_a_pasted_log_id_may_carry_spaces_and_capitals():
    assert resend.parse_log_id(" 65A1B2C3D4E5F60718293A4B\n") == ObjectId(WORKSPACE)


def test_to_addresses_must_be_plain_and_inside_the_allowed_domains():
    settings = _settings(EXPORT_ALLOWED_EMAIL_DOMAINS="acme.test")
    assert resend.parse_to(["ops@acme.test", "x@sub.acme.test"], settings) == ("ops@acme.test", "x@sub.acme.test")
    assert resend.parse_to([], settings) == ()
    with pytest.raises(UsageProblem, match=r"^--to: recipient\(s\) evil@other.test are outside"):
        resend.parse_to(["ops@acme.test", "evil@other.test"], settings)
    with pytest.raises(UsageProblem, match="invalid email address 'not-an-address'"):
        resend.parse_to(["not-an-address"], settings)


@pytest.mark.parametrize("status", ["failed", "sending"])
def test_an_entry_never_delivered_is_refused_saying_the_next_scheduled_run_delivers_it(status):
    entry = read_entry(_document(status=status))
    reason = resend.refusal(entry)
    assert reason is not None
    assert f"never delivered (status {status})" in reason and "the next scheduled run delivers" in reason


def test_only_a_completed_entry_with_a_range_can_be_rebuilt():
    assert resend.refusal(read_entry(_document())) is None
    assert "only a completed export" in (resend.refusal(read_entry(_document(status="queued"))) or "")
    without_range = _document(window_start_key=_ABSENT, window_end_key=_ABSENT, window_start=None, window_end=None)
    assert "records no range" in (resend.refusal(read_entry(without_range)) or "")


def test_a_resend_goes_to_to_or_to_the_entrys_recipients_still_under_the_allow_list():
    entry = read_entry(_document())
    assert resend.recipients_of(entry, ("ops@acme.test",), _settings()) == ("ops@acme.test",)
    assert resend.recipients_of(entry, (), _settings()) == ("a@acme.test", "b@acme.test")
    with pytest.raises(resend.NotResendable, match=r"no longer allowed: recipient\(s\) a@acme.test, b@acme.test"):
        resend.recipients_of(entry, (), _settings(EXPORT_ALLOWED_EMAIL_DOMAINS="other.test"))
    with pytest.raises(resend.NotResendable, match="records no recipient; pass --to"):
        resend.recipients_of(read_entry(_document(email_sent_to="")), (), _settings())


# --- verify's reading of the file ------------------------------------------------------------------


def test_verify_refuses_a_missing_or_unreadable_file_before_connecting(tmp_path):
    with pytest.raises(logs.UnreadableFile, match="does not exist") as caught:
        logs.read_fingerprint(tmp_path / "gone.xlsx")
    assert caught.value.exit_code == ExitCode.USAGE
    with pytest.raises(logs.UnreadableFile, match=r"^Cannot read .*\(Is a directory\)"):
        logs.read_fingerprint(tmp_path)
    if os.geteuid() != 0:  # root reads any file
        locked = tmp_path / "locked.xlsx"
        locked.write_bytes(b"x")
        locked.chmod(0)
        with pytest.raises(logs.UnreadableFile, match="Permission denied"):
            logs.read_fingerprint(locked)


def test_verify_finds_the_entry_of_a_file_by_its_bytes(mongo_db, mongo_server_uri, tmp_path):
    path = tmp_path / "received.xlsx"
    path.write_bytes(b"workbook bytes")
    document = _document(attachment_sha256=hashlib.sha256(b"workbook bytes").hexdigest())
    mongo_db.export_logs.insert_one(document)
    mongo_db.workspaces.insert_one({"_id": ObjectId(WORKSPACE), "name": "Acme", "status": "active"})
    settings = _settings(MONGODB_URI=mongo_server_uri, MONGODB_DATABASE=mongo_db.name)
    report = logs.verify(settings, path)
    assert report.exit_code == ExitCode.OK
    facts = report.as_dict()
    [entry] = facts["entries"]
    assert (entry["id"], entry["workspace_name"], entry["recipients"]) == (
        str(document["_id"]),
        "Acme",
        ["a@acme.test", "b@acme.test"],
    )
    assert entry["range"]["kind"] == "arrival" and entry["range"]["start"] == str(document["window_start_key"])
    path.write_bytes(b"workbook bytez")
    changed = logs.verify(settings, path)
    assert changed.exit_code == ExitCode.FAILED
    assert changed.as_dict()["found"] is False and changed.as_dict()["error"] == logs.NOT_RECORDED
