"""The writer fills openpyxl's own package (workbook/writer.py, package_template) with the rows."""

from __future__ import annotations

import errno
import re
import stat
import tempfile
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from openpyxl import load_workbook

from wa_export.workbook import writer as template
from wa_export.workbook.writer import HEADER, WorkbookWriter

ZONE = ZoneInfo("Europe/Berlin")  # with DST, like the real exports
START = datetime(2024, 3, 31, 0, 30, tzinfo=UTC)  # the night the clocks change


def _rows(count: int) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for index in range(count):
        rows.append(
            (
                f"+4915{index:06d}",
                "+15550001111",
                f"=1+{index} <&> \x01 ",
                START + timedelta(minutes=31 * index),
                ("received", "sent_via_ai", "sent_by_human")[index % 3],
                "65f0c0ffee0000000000beef",
            )
        )
    rows.append((None, None, None, None, "unknown", "65f0c0ffee0000000000beef"))  # empty cells too
    return rows


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info.filename) for info in archive.infolist()}


CORE_TIME = re.compile(rb">\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ<")


@pytest.mark.parametrize(
    ("count", "rows_per_sheet", "name", "spool_bytes"),
    [
        (0, 1_048_575, None, template.SHEET_SPOOL_BYTES),
        (5, 1_048_575, "Acme", template.SHEET_SPOOL_BYTES),
        (7, 3, "Café <&> \"quoted\" 'a' 🚀 \x01 \u2028 line", template.SHEET_SPOOL_BYTES),
        (40, 15, "Spilled To Disk", 300),  # sheets bigger than the spool go through a temporary file
    ],
)
def test_the_writer_fills_openpyxls_package_with_the_rows(
    tmp_path, monkeypatch, count, rows_per_sheet, name, spool_bytes
):
    monkeypatch.setattr(template, "SHEET_SPOOL_BYTES", spool_bytes)
    rows = _rows(count)[:-1] if count == 0 else _rows(count)
    path = tmp_path / "WorkbookWriter.xlsx"
    with WorkbookWriter(path, ZONE, rows_per_sheet=rows_per_sheet, workspace_name=name) as writer:
        writer.append_many(rows)
        assert writer.commit() == path
    produced = _members(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(path.name for path in tmp_path.iterdir()) == ["WorkbookWriter.xlsx"]
    sheets = max(1, -(-len(rows) // rows_per_sheet))
    package = template.package_template(sheets)
    assert list(produced) == list(package.order), "openpyxl's parts, in openpyxl's order"
    for part, content in package.fixed.items():
        assert produced[part] == content, part
    for number in range(1, sheets + 1):
        sheet = produced[f"{template.SHEET_PREFIX}{number}.xml"]
        assert sheet.startswith(package.sheet_head) and sheet.endswith(package.sheet_tail[1])
    assert len(CORE_TIME.findall(produced["docProps/core.xml"])) == 2

    workbook = load_workbook(path)
    values = [tuple(cell.value for cell in row) for sheet in workbook.worksheets for row in sheet.iter_rows()]
    assert [row for row in values if row == HEADER] == [HEADER] * len(workbook.worksheets)
    assert len(values) - len(workbook.worksheets) == len(rows)
    assert [sheet.auto_filter.ref for sheet in workbook.worksheets] == [
        f"A1:F{sheet.max_row}" for sheet in workbook.worksheets
    ]


def test_an_aborted_template_workbook_leaves_no_file(tmp_path):
    path = tmp_path / "aborted.xlsx"
    with pytest.raises(RuntimeError), WorkbookWriter(path, ZONE) as writer:
        writer.append_many(_rows(3))
        raise RuntimeError("the export failed half way")
    assert list(tmp_path.iterdir()) == []


def test_a_big_sheet_is_compressed_from_its_file_never_read_whole(tmp_path, monkeypatch):
    """Memory stays flat at a million rows: a spilled sheet streams into the package a chunk at a time."""
    monkeypatch.setattr(template, "SHEET_SPOOL_BYTES", 1_000)
    monkeypatch.setattr(template, "_STREAM_CHUNK", 4_096)
    reads: list[tuple[bool, int]] = []
    read = tempfile.SpooledTemporaryFile.read

    def recording_read(self: tempfile.SpooledTemporaryFile[bytes], *args: int) -> bytes:
        data = read(self, *args)
        reads.append((self._rolled, len(data)))
        return data

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "read", recording_read)
    path = tmp_path / "big.xlsx"
    rows = _rows(600)
    with WorkbookWriter(path, ZONE) as writer:
        writer.append_many(rows)
        writer.commit()
    monkeypatch.undo()
    assert all(on_disk for on_disk, _ in reads), "the sheet went to its temporary file"
    assert max(size for _, size in reads) == 4_096 < sum(size for _, size in reads)
    assert zipfile.ZipFile(path).testzip() is None
    values = [tuple(cell.value for cell in row) for row in load_workbook(path).worksheets[0].iter_rows()]
    assert len(values) == len(rows) + 1 and values[0] == HEADER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.xlsx"], "no temporary file left"


@pytest.mark.parametrize("spool_bytes", [1_000, 5_000])  # the header spills / the rows spill
def test_a_full_disk_while_a_sheet_spills_leaves_no_file(tmp_path, monkeypatch, spool_bytes):
    monkeypatch.setattr(template, "SHEET_SPOOL_BYTES", spool_bytes)

    def disk_full(**_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "TemporaryFile", disk_full)
    with pytest.raises(OSError) as info, WorkbookWriter(tmp_path / "full.xlsx", ZONE) as writer:
        writer.append_many(_rows(100))
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []
