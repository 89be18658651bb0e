"""Password-protected workbooks: ECMA-376 Agile encryption into an OLE file, bounded in memory, read back by two readers."""

from __future__ import annotations

import io
import os
import stat
import tracemalloc
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import msoffcrypto
import olefile
import pytest
from msoffcrypto.exceptions import InvalidKeyError
from msoffcrypto.method import ecma376_agile

from helpers import sheet_rows
from libreoffice_reader import LibreOfficeTimeout, displayed, libreoffice_rows, processes_of
from wa_export.commands.cleanup import TEMP_FILE_PATTERN
from wa_export.workbook import encryption
from wa_export.workbook.encryption import WorkbookEncryptionError, encrypt_workbook
from wa_export.workbook.writer import WorkbookWriter
from wa_export.workbook_password import MAX_PASSWORD_LENGTH

PASSWORD = "Wörkbook-Pa55 €/&<x>"  # non-ASCII and XML-special characters: UTF-16 key derivation, escaping
WORKSPACE_ID = "65a1b2c3d4e5f60718293a4b"
# A container needs DIFAT sectors once its FAT outgrows the 109 slots in the header (109 * 128 sectors of 512 bytes).
DIFAT_THRESHOLD = 109 * 128 * 512


def _workbook(path: Path, count: int = 40) -> Path:
    rows = [
        (
            f"+49151{index:07d}",
            "+4930123456",
            f"Nachricht {index}: Grüße, 你好, emoji 😀 <tag> & more",
            datetime(2024, 5, 1, 12, index % 60, tzinfo=UTC),
            "received" if index % 2 else "sent_by_human",
            WORKSPACE_ID,
        )
        for index in range(count)
    ]
    with WorkbookWriter(path, ZoneInfo("Europe/Berlin")) as writer:
        writer.append_many(rows)
        return writer.commit()


def _decrypt(path: Path, password: str) -> bytes:
    with open(path, "rb") as handle:
        office_file = msoffcrypto.OfficeFile(handle)
        office_file.load_key(password=password, verify_password=True)
        plain = io.BytesIO()
        office_file.decrypt(plain, verify_integrity=True)
    return plain.getvalue()


@pytest.fixture
def plain_and_encrypted(tmp_path: Path) -> tuple[Path, Path]:
    plain = _workbook(tmp_path / "plain.xlsx")
    return plain, encrypt_workbook(plain, tmp_path / "encrypted.xlsx", PASSWORD)


def test_result_is_an_ole_file_that_no_zip_or_xlsx_reader_opens(plain_and_encrypted: tuple[Path, Path]) -> None:
    _, encrypted = plain_and_encrypted
    assert olefile.isOleFile(str(encrypted))
    with olefile.OleFileIO(str(encrypted)) as container:
        assert container.exists("EncryptionInfo") and container.exists("EncryptedPackage")
    assert not zipfile.is_zipfile(encrypted)
    with pytest.raises(zipfile.BadZipFile):
        sheet_rows(encrypted)
    assert msoffcrypto.OfficeFile(io.BytesIO(encrypted.read_bytes())).is_encrypted()


def test_decrypts_with_the_password_to_the_original_file_and_rows(plain_and_encrypted: tuple[Path, Path]) -> None:
    plain, encrypted = plain_and_encrypted
    decrypted = _decrypt(encrypted, PASSWORD)
    assert decrypted == plain.read_bytes()
    rows = sheet_rows(decrypted)
    assert len(rows) == 40 and rows == sheet_rows(plain)


@pytest.mark.parametrize("wrong", ["wrong", PASSWORD[:-1], PASSWORD + " "])
def test_a_wrong_password_fails(plain_and_encrypted: tuple[Path, Path], wrong: str) -> None:
    _, encrypted = plain_and_encrypted
    with pytest.raises(InvalidKeyError):
        _decrypt(encrypted, wrong)


def test_encrypted_file_is_private_and_the_plain_one_untouched(tmp_path: Path) -> None:
    plain = _workbook(tmp_path / "plain.xlsx")
    before = plain.read_bytes()
    old = os.umask(0o000)  # a permissive umask must not widen the mode
    try:
        encrypted = encrypt_workbook(plain, tmp_path / "encrypted.xlsx", PASSWORD)
    finally:
        os.umask(old)
    assert stat.S_IMODE(encrypted.stat().st_mode) == 0o600
    assert plain.read_bytes() == before


def test_each_encryption_is_fresh(tmp_path: Path) -> None:
    plain = _workbook(tmp_path / "plain.xlsx")
    first = encrypt_workbook(plain, tmp_path / "first.xlsx", PASSWORD).read_bytes()
    second = encrypt_workbook(plain, tmp_path / "second.xlsx", PASSWORD).read_bytes()
    # Random salts and key: the same workbook and password never give the same bytes.
    assert first != second
    assert _decrypt(tmp_path / "first.xlsx", PASSWORD) == _decrypt(tmp_path / "second.xlsx", PASSWORD)


def _large_zip(path: Path, size: int) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("payload.bin", os.urandom(size))
    return path


def test_a_file_past_the_difat_threshold_round_trips_with_integrity(tmp_path: Path) -> None:
    plain = _large_zip(tmp_path / "large.xlsx", DIFAT_THRESHOLD + 300_000)
    encrypted = encrypt_workbook(plain, tmp_path / "large-encrypted.xlsx", PASSWORD)
    with olefile.OleFileIO(str(encrypted)) as container:
        assert container.get_size("EncryptedPackage") == 8 + -(-plain.stat().st_size // 16) * 16
    assert _decrypt(encrypted, PASSWORD) == plain.read_bytes()


def test_memory_stays_bounded_whatever_the_file_size(tmp_path: Path) -> None:
    plain = _large_zip(tmp_path / "large.xlsx", 20 * 2**20)
    tracemalloc.start()
    try:
        encrypt_workbook(plain, tmp_path / "large-encrypted.xlsx", PASSWORD)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # The library's own OOXMLFile.encrypt peaks at several times the file size (60 MB here).
    assert peak < 2 * 2**20, f"peak {peak / 2**20:.1f} MB while encrypting a 20 MB file"


def test_password_rules(tmp_path: Path) -> None:
    plain = _workbook(tmp_path / "plain.xlsx", count=1)
    with pytest.raises(ValueError, match="empty"):
        encrypt_workbook(plain, tmp_path / "a.xlsx", "")
    with pytest.raises(ValueError, match=str(MAX_PASSWORD_LENGTH)):
        encrypt_workbook(plain, tmp_path / "b.xlsx", "x" * (MAX_PASSWORD_LENGTH + 1))
    longest = encrypt_workbook(plain, tmp_path / "c.xlsx", "y" * MAX_PASSWORD_LENGTH)
    assert sheet_rows(_decrypt(longest, "y" * MAX_PASSWORD_LENGTH)) == sheet_rows(plain)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["c.xlsx", "plain.xlsx"]


def test_an_existing_target_is_never_overwritten(tmp_path: Path) -> None:
    plain = _workbook(tmp_path / "plain.xlsx", count=1)
    target = tmp_path / "taken.xlsx"
    target.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        encrypt_workbook(plain, target, PASSWORD)
    assert target.read_bytes() == b"someone else's"


def test_failures_leave_no_file_and_never_carry_the_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _workbook(tmp_path / "plain.xlsx", count=1)

    def leaky(password: str, *args: object, **kwargs: object) -> object:
        raise ValueError(f"cannot use {password!r}")

    monkeypatch.setattr(ecma376_agile.ECMA376Agile, "generate_encryption_parameters", staticmethod(leaky))
    with pytest.raises(WorkbookEncryptionError) as caught:
        encrypt_workbook(plain, tmp_path / "out.xlsx", PASSWORD)
    error = caught.value
    assert PASSWORD not in str(error) and PASSWORD not in repr(error.args)
    # Neither chained nor remembered as context: a traceback printer finds no trace of the library's message.
    assert error.__cause__ is None and error.__context__ is None
    assert "ValueError" in str(error) and "plain.xlsx" in str(error)
    assert not (tmp_path / "out.xlsx").exists()


def test_a_missing_source_or_a_non_workbook_leaves_no_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        encrypt_workbook(tmp_path / "missing.xlsx", tmp_path / "out.xlsx", PASSWORD)
    tiny = tmp_path / "tiny.xlsx"
    tiny.write_bytes(b"PK" + bytes(100))
    with pytest.raises(WorkbookEncryptionError, match="too small"):
        encrypt_workbook(tiny, tmp_path / "out.xlsx", PASSWORD)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.xlsx"]


def test_a_source_that_shrinks_while_read_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plain = _workbook(tmp_path / "plain.xlsx")
    real_fstat = os.fstat
    monkeypatch.setattr(
        encryption.os,
        "fstat",
        lambda fd: os.stat_result((*real_fstat(fd)[:6], real_fstat(fd).st_size + 5000, *real_fstat(fd)[7:])),
    )
    with pytest.raises(WorkbookEncryptionError, match="changed"):
        encrypt_workbook(plain, tmp_path / "out.xlsx", PASSWORD)
    assert not (tmp_path / "out.xlsx").exists()


def test_libreoffice_opens_it_only_with_the_password(plain_and_encrypted: tuple[Path, Path]) -> None:
    plain, encrypted = plain_and_encrypted
    expected = [displayed(row) for row in sheet_rows(plain)]

    opened = libreoffice_rows(encrypted, PASSWORD)
    assert opened.opened and opened.rows == expected and len(expected) == 40

    for password in (None, "wrong"):
        refused = libreoffice_rows(encrypted, password)
        assert not refused.opened and refused.rows == [] and refused.error
        assert processes_of(refused) == []

    # The harness is not fooled by a plain file: the same reader opens it without a password.
    assert libreoffice_rows(plain, None).rows == expected
    assert processes_of(opened) == [], "a LibreOffice process outlived the reader"


def test_libreoffice_reader_is_bounded_in_time_and_leaves_no_process(
    plain_and_encrypted: tuple[Path, Path],
) -> None:
    _, encrypted = plain_and_encrypted
    # soffice takes seconds to start: the time limit falls while it is starting up.
    with pytest.raises(LibreOfficeTimeout) as caught:
        libreoffice_rows(encrypted, PASSWORD, timeout=1.0)
    assert processes_of(caught.value) == []


# --- the writer publishes the encrypted workbook ------------------------------------------------------


def test_writer_commit_with_a_password_publishes_only_the_encrypted_file(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    plain = _workbook(tmp_path / "plain" / "same.xlsx")
    target = tmp_path / "out" / "same.xlsx"
    target.parent.mkdir()
    rows = sheet_rows(plain)
    with WorkbookWriter(target, ZoneInfo("Europe/Berlin")) as writer:
        writer.append_many(
            (row[0], row[1], row[2], row[3].replace(tzinfo=ZoneInfo("Europe/Berlin")), row[4], row[5]) for row in rows
        )
        published = writer.commit(password=PASSWORD)
    assert published == target
    assert os.listdir(target.parent) == ["same.xlsx"], "no plain or encrypted temp file left"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert olefile.isOleFile(str(target))
    assert sheet_rows(_decrypt(target, PASSWORD)) == rows


def test_writer_leaves_no_temp_file_when_the_encrypted_one_cannot_be_published(tmp_path: Path) -> None:
    taken = tmp_path / "taken.xlsx"
    taken.write_bytes(b"an earlier export")
    with WorkbookWriter(taken, ZoneInfo("UTC")) as writer:
        writer.append("+1", "+2", "hello", datetime(2024, 5, 1, tzinfo=UTC), "received", WORKSPACE_ID)
        with pytest.raises(FileExistsError):
            writer.commit([taken], password=PASSWORD)
    assert os.listdir(tmp_path) == ["taken.xlsx"] and taken.read_bytes() == b"an earlier export"


def test_cleanup_recognises_the_writers_encrypted_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    targets: list[Path] = []
    real = encryption.encrypt_workbook

    def recording(source: Path, target: Path, password: str) -> Path:
        targets.append(target)
        return real(source, target, password)

    monkeypatch.setattr(encryption, "encrypt_workbook", recording)
    with WorkbookWriter(tmp_path / "acme_whatsapp_messages_2026-01-02_10-00.xlsx", ZoneInfo("UTC")) as writer:
        writer.append("+1", "+2", "hello", datetime(2024, 5, 1, tzinfo=UTC), "received", WORKSPACE_ID)
        writer.commit(password=PASSWORD)
    [target] = targets
    # Left behind by a killed run, cleanup removes it once stale.
    assert TEMP_FILE_PATTERN.match(target.name) and target.parent == tmp_path
