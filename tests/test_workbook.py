"""Unit tests for the streaming workbook writer."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import textwrap
import uuid
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from bson import SON, Binary, Decimal128, ObjectId

from wa_export.workbook import cells as cells_module
from wa_export.workbook import writer as workbook_module
from wa_export.workbook.cells import CELL_TEXT_LIMIT, cell_text
from wa_export.workbook.writer import HEADER, SHEET_TITLE, WorkbookWriter

UTC = UTC
WS_ID = "65a1b2c3d4e5f60718293a4b"


def _write(path: Path, rows: list[tuple], tz: str = "UTC", **kwargs) -> Path:
    with WorkbookWriter(path, ZoneInfo(tz), **kwargs) as writer:
        writer.append_many(rows)
        return writer.commit()


def _row(content: object, ts: datetime | None = None, sender: object = "+4915112345678") -> tuple:
    return (sender, "+4930123456", content, ts or datetime(2024, 5, 1, 12, 0, tzinfo=UTC), "received", WS_ID)


def _sheet_xml(path: Path, index: int = 1) -> str:
    with zipfile.ZipFile(path) as archive:
        return archive.read(f"xl/worksheets/sheet{index}.xml").decode("utf-8")


def _leftovers(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


# --- layout ------------------------------------------------------------------


def test_header_style_freeze_filter_and_widths(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.xlsx", [_row("hello"), _row("world")])
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == [SHEET_TITLE]
    ws = wb[SHEET_TITLE]
    header = next(ws.iter_rows(min_row=1, max_row=1))
    assert tuple(c.value for c in header) == HEADER
    assert all(c.font.b for c in header)
    assert all(c.fill.fill_type == "solid" for c in header)
    assert ws.freeze_panes == "A2"
    assert ws.auto_filter.ref == "A1:F3"
    assert ws.column_dimensions["C"].width >= 50
    assert all(ws.column_dimensions[letter].width >= 12 for letter in "ABDEF")


def test_header_cells_fit_their_text_next_to_the_filter_button(tmp_path: Path) -> None:
    ws = openpyxl.load_workbook(_write(tmp_path / "out.xlsx", [_row("hello")]))[SHEET_TITLE]
    for letter, title in zip("ABCDEF", HEADER, strict=True):
        # A bold title plus the ~3 characters the filter drop-down covers.
        assert ws.column_dimensions[letter].width >= len(title) * 1.1 + 3, (letter, title)


def test_message_content_wraps_and_rows_are_top_aligned(tmp_path: Path) -> None:
    rows = [_row("a long message " * 20), _row("line one\nline two"), _row("short"), _row(None)]
    path = _write(tmp_path / "out.xlsx", rows * 50)
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    for row in ws.iter_rows(min_row=2, max_row=5):
        content = row[2]
        if content.value is not None:
            assert content.alignment.wrap_text is True
        for cell in (row[0], row[1], row[3], row[4], row[5]):
            assert not cell.alignment.wrap_text  # only Message Content wraps
            assert cell.alignment.vertical == "top"  # a tall wrapped row still reads left to right
    assert ws["D2"].number_format == "yyyy-mm-dd hh:mm:ss"
    # One style per kind of cell, registered once, not one per row (the fast row path stays a style id).
    with zipfile.ZipFile(path) as archive:
        styles = archive.read("xl/styles.xml").decode("utf-8")
    assert styles.count("<xf ") - styles.count("<cellStyleXfs") <= 6
    wrapped = ws["C2"].style_id
    assert all(ws[f"C{r}"].style_id == wrapped for r in range(2, 200, 4))


def test_properties_carry_title_creator_and_timestamp_zone(tmp_path: Path) -> None:
    path = tmp_path / "out.xlsx"
    with WorkbookWriter(path, ZoneInfo("Asia/Kolkata"), workspace_name="Café Olé") as writer:
        writer.append_many([_row("x")])
        writer.commit()
    properties = openpyxl.load_workbook(path).properties
    assert properties.title == "WhatsApp messages – Café Olé"
    assert properties.creator == "wa-export" and properties.lastModifiedBy == "wa-export"
    assert properties.subject == "Timestamps in Asia/Kolkata"
    assert "each message's time in Asia/Kolkata" in properties.description


def test_properties_without_a_name_and_with_a_hostile_one(tmp_path: Path) -> None:
    plain = openpyxl.load_workbook(_write(tmp_path / "plain.xlsx", [_row("x")], tz="Europe/Berlin")).properties
    assert plain.title == "WhatsApp messages"  # existing callers: no name, the zone's own name
    assert plain.subject == "Timestamps in Europe/Berlin"
    path = tmp_path / "hostile.xlsx"
    hostile = "Evil\r\nCorp\x00\x1b " + "x" * 1000
    with WorkbookWriter(
        path, timezone(timedelta(hours=5, minutes=30)), workspace_name=hostile, timezone_name="UTC+05:30"
    ) as writer:
        writer.commit()
    properties = openpyxl.load_workbook(path).properties
    assert properties.title.startswith("WhatsApp messages – Evil Corp xxx")
    assert "\n" not in properties.title and "\x00" not in properties.title and len(properties.title) < 300
    assert properties.subject == "Timestamps in UTC+05:30"


def test_rows_keep_order_and_values(tmp_path: Path) -> None:
    rows = [_row(f"message {i}", datetime(2024, 5, 1, 12, 0, i, tzinfo=UTC)) for i in range(50)]
    path = _write(tmp_path / "out.xlsx", rows)
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    values = list(ws.iter_rows(min_row=2, values_only=True))
    assert [v[2] for v in values] == [f"message {i}" for i in range(50)]
    assert values[0] == ("+4915112345678", "+4930123456", "message 0", datetime(2024, 5, 1, 12, 0), "received", WS_ID)


def test_append_and_append_many_count(tmp_path: Path) -> None:
    with WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC")) as writer:
        writer.append("+1", "+2", "a", None, "received", WS_ID)
        writer.append_many([_row("b"), _row("c")])
        assert writer.rows_written == 3
        path = writer.commit()
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    assert [r[2] for r in ws.iter_rows(min_row=2, values_only=True)] == ["a", "b", "c"]


def test_empty_workbook_has_header_only(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.xlsx", [])
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    assert list(ws.iter_rows(values_only=True)) == [HEADER]


# --- text cells ----------------------------------------------------------------

FORMULA_LIKE = ["=1+1", "+4915112345678", "-5", "@SUM(A1)", "\t=1", "\r=1", '=HYPERLINK("http://x")', "#N/A", "TRUE"]


def test_formula_looking_values_stay_literal_text(tmp_path: Path) -> None:
    rows = [(value, value, value, None, value, value) for value in FORMULA_LIKE]
    path = _write(tmp_path / "out.xlsx", rows)
    xml = _sheet_xml(path)
    assert "<f>" not in xml and "<f " not in xml
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    for row, expected in zip(ws.iter_rows(min_row=2), FORMULA_LIKE, strict=True):
        for cell in (row[0], row[1], row[2], row[4], row[5]):
            assert cell.data_type == "s"
            assert cell.value == expected


def test_control_characters_removed(tmp_path: Path) -> None:
    dirty = "a\x00b\x01c\x08d\x0be\x0cf\x1fg\ufffeh\uffffi\ud800j"
    assert cell_text(dirty) == "abcdefghij"
    assert cell_text("keep\ttab\nnewline\rcr") == "keep\ttab\nnewline\rcr"
    path = _write(tmp_path / "out.xlsx", [_row(dirty, sender="+49\x00151")])
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    row = next(ws.iter_rows(min_row=2, values_only=True))
    assert row[0] == "+49151"
    assert row[2] == "abcdefghij"


def test_surrogate_pairs_are_joined_not_dropped() -> None:
    paired = "x\ud83c\udf89y"  # what a surrogatepass decode of 🎉 looks like
    assert cell_text(paired) == "x🎉y"


INTERNATIONAL = [
    "Hello 🎉👍🏽👨‍👩‍👧‍👦 🇩🇪",
    "مرحبا بك في خدمة العملاء",
    "שלום עולם",
    "你好，世界。我们的订单号是１２３",
    "e\u0301 n\u0303 a\u0308\u0301 Z\u0351\u0352",
    "\u200fRTL mark\u200e and ZWJ\u200d and nbsp\u00a0",
    "  leading and trailing spaces  ",
    "multi\nline\r\nmessage\twith tab",
    "x\x7fy\x85z",  # legal in XML 1.0, kept
]


def test_international_text_survives_exactly(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.xlsx", [_row(text) for text in INTERNATIONAL])
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    got = [r[2] for r in ws.iter_rows(min_row=2, values_only=True)]
    assert got == INTERNATIONAL
    for text in INTERNATIONAL:
        assert cell_text(text) == text


def test_excel_escape_sequences_are_escaped() -> None:
    # Excel would show "_x0041_" as "A"; "_x005F_" makes the underscore literal.
    assert cell_text("a_x0041_b") == "a_x005F_x0041_b"
    assert cell_text("snake_x_case") == "snake_x_case"


def test_long_content_truncated_with_marker(tmp_path: Path) -> None:
    text = "x" * 100_000
    cleaned = cell_text(text)
    assert len(cleaned) <= CELL_TEXT_LIMIT
    assert cleaned.startswith("x" * 32_000)
    omitted = 100_000 - cleaned.index("…")
    assert cleaned.endswith(f"… [truncated by wa-export: {omitted} characters omitted]")
    path = _write(tmp_path / "out.xlsx", [_row(text)])
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    stored = next(ws.iter_rows(min_row=2, values_only=True))[2]
    assert stored == cleaned


def test_truncation_counts_utf16_units_for_emoji() -> None:
    cleaned = cell_text("🎉" * 20_000)  # 40,000 UTF-16 units
    units = len(cleaned.encode("utf-16-le")) // 2
    assert units <= CELL_TEXT_LIMIT
    assert "truncated by wa-export" in cleaned
    assert cell_text("🎉" * 16_000) == "🎉" * 16_000  # 32,000 units: fits


def test_exactly_at_limit_is_not_truncated() -> None:
    assert cell_text("y" * CELL_TEXT_LIMIT) == "y" * CELL_TEXT_LIMIT
    assert "truncated" in cell_text("y" * (CELL_TEXT_LIMIT + 1))


def test_non_string_values_become_text(tmp_path: Path) -> None:
    oid = ObjectId("65a1b2c3d4e5f60718293a4b")
    the_uuid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    cases: list[tuple[object, str]] = [
        (None, ""),
        (42, "42"),
        (1.5, "1.5"),
        (True, "True"),
        (Decimal128("12.50"), "12.50"),
        (oid, "65a1b2c3d4e5f60718293a4b"),
        (b"\x00\x01\x02", "<binary 3 bytes>"),
        (Binary(b"abcd", 0), "<binary 4 bytes>"),
        (Binary.from_uuid(the_uuid), str(the_uuid)),
        (["a", 1, {"b": None}], '["a",1,{"b":null}]'),
        ({"text": "hi 🎉", "n": 2}, '{"text":"hi 🎉","n":2}'),
        (SON([("z", 1), ("a", oid)]), '{"z":1,"a":{"$oid":"65a1b2c3d4e5f60718293a4b"}}'),
        (datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), "2024-01-02T03:04:05+00:00"),
    ]
    for value, expected in cases:
        assert cell_text(value) == expected, value
    path = _write(tmp_path / "out.xlsx", [_row(value) for value, _ in cases])
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    got = [r[2] for r in ws.iter_rows(min_row=2, max_row=len(cases) + 1, values_only=True)]
    assert got == [expected or None for _, expected in cases]
    assert all(c.data_type in ("s", "n") and not isinstance(c.value, (int, float)) for c in ws["C"][1:])


def test_hostile_str_does_not_crash() -> None:
    class Evil:
        def __str__(self) -> str:
            raise RuntimeError("boom")

    assert "Evil" in cell_text(Evil())


def test_missing_phone_numbers_are_blank(tmp_path: Path) -> None:
    path = _write(tmp_path / "out.xlsx", [(None, "", "hi", None, "received", WS_ID)])
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    assert next(ws.iter_rows(min_row=2, values_only=True)) == (None, None, "hi", None, "received", WS_ID)


def test_repeated_values_are_cleaned_on_every_row_and_the_memory_stays_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Phone, Status and Workspace ID cells are remembered per value: every row still gets the
    cleaned, escaped text (a str subclass and a non-str value too), and the memory keeps at most
    its limit instead of growing with the distinct values."""
    monkeypatch.setattr(cells_module, "TAILS_KEPT", 3)

    class Phone(str):
        pass

    values: list[object] = ["=1+1", " +49 151\x07 ", "a<b>&c\r", Phone("+4930"), 4915112345678, None]
    rows = [(value, "+4930123456", "hi", None, "received", WS_ID) for value in values * 3]
    path = _write(tmp_path / "out.xlsx", rows)
    sheet = openpyxl.load_workbook(path)[SHEET_TITLE]
    senders = [row[0] for row in sheet.iter_rows(min_row=2, values_only=True)]
    expected = ["=1+1", " +49 151 ", "a<b>&c\r", "+4930", "4915112345678", None]
    assert senders == expected * 3
    xml = _sheet_xml(path)
    assert xml.count('<t xml:space="preserve"> +49 151 </t>') == 3
    assert xml.count('<t xml:space="preserve">a&lt;b&gt;&amp;c&#13;</t>') == 3
    tails = cells_module.text_cell_tails(' s="4"')
    for number in range(10):
        assert tails(f"+49{number}") == f' s="4" t="inlineStr"><is><t>+49{number}</t></is></c>'
    assert tails.cache_info().currsize <= 3


# --- timestamps ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "utc_value", "local_expected"),
    [
        ("Asia/Kolkata", datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC), datetime(2024, 5, 1, 17, 30, 0)),
        # Europe/Berlin DST starts 2024-03-31 01:00 UTC (02:00 CET -> 03:00 CEST).
        ("Europe/Berlin", datetime(2024, 3, 31, 0, 59, 59, tzinfo=UTC), datetime(2024, 3, 31, 1, 59, 59)),
        ("Europe/Berlin", datetime(2024, 3, 31, 1, 0, 0, tzinfo=UTC), datetime(2024, 3, 31, 3, 0, 0)),
        # DST ends 2024-10-27 01:00 UTC: 02:30 local happens twice.
        ("Europe/Berlin", datetime(2024, 10, 27, 0, 30, 0, tzinfo=UTC), datetime(2024, 10, 27, 2, 30, 0)),
        ("Europe/Berlin", datetime(2024, 10, 27, 1, 30, 0, tzinfo=UTC), datetime(2024, 10, 27, 2, 30, 0)),
        (
            "America/New_York",
            datetime(2024, 7, 4, 3, 15, 7, 123000, tzinfo=UTC),
            datetime(2024, 7, 3, 23, 15, 7, 123000),
        ),
        ("Australia/Lord_Howe", datetime(2024, 4, 6, 15, 15, tzinfo=UTC), datetime(2024, 4, 7, 1, 45)),
        ("UTC", datetime(2024, 5, 1, 12, 0), datetime(2024, 5, 1, 12, 0)),  # naive means UTC (pymongo default)
    ],
)
def test_timestamp_is_local_datetime_cell(
    tmp_path: Path, zone: str, utc_value: datetime, local_expected: datetime
) -> None:
    assert utc_value.astimezone(ZoneInfo(zone)).replace(tzinfo=None) == local_expected or utc_value.tzinfo is None
    path = _write(tmp_path / "out.xlsx", [_row("x", utc_value)], tz=zone)
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    cell = ws["D2"]
    assert cell.is_date
    assert cell.number_format == "yyyy-mm-dd hh:mm:ss"
    assert isinstance(cell.value, datetime)
    assert cell.value == local_expected


def test_dst_hour_cache_is_exact_across_transition(tmp_path: Path) -> None:
    zone = ZoneInfo("Europe/Berlin")
    start = datetime(2024, 3, 30, 23, 0, tzinfo=UTC)
    stamps = [start + timedelta(minutes=7 * i) for i in range(60)]
    path = _write(tmp_path / "out.xlsx", [_row("x", ts) for ts in stamps], tz="Europe/Berlin")
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    got = [r[3] for r in ws.iter_rows(min_row=2, values_only=True)]
    assert got == [ts.astimezone(zone).replace(tzinfo=None) for ts in stamps]


def test_none_and_odd_timestamps(tmp_path: Path) -> None:
    rows = [
        ("+1", "+2", "none", None, "received", WS_ID),
        ("+1", "+2", "string ts", "2024-01-01", "received", WS_ID),
        # Before 1900-03-01 Excel has no (correct) date: kept as unambiguous text.
        ("+1", "+2", "ancient", datetime(1800, 1, 1, tzinfo=UTC), "received", WS_ID),
    ]
    path = _write(tmp_path / "out.xlsx", rows)
    ws = openpyxl.load_workbook(path)[SHEET_TITLE]
    values = [r[3] for r in ws.iter_rows(min_row=2, values_only=True)]
    assert values == [None, "2024-01-01", "1800-01-01T00:00:00+00:00"]


# --- sheets -------------------------------------------------------------------


def test_rollover_to_numbered_sheets_each_with_header(tmp_path: Path) -> None:
    rows = [_row(f"m{i}") for i in range(7)]
    path = _write(tmp_path / "out.xlsx", rows, rows_per_sheet=3)
    wb = openpyxl.load_workbook(path)
    assert wb.sheetnames == [SHEET_TITLE, f"{SHEET_TITLE} (2)", f"{SHEET_TITLE} (3)"]
    contents = []
    for ws in wb.worksheets:
        values = list(ws.iter_rows(values_only=True))
        assert values[0] == HEADER
        assert ws.freeze_panes == "A2"
        assert ws.auto_filter.ref == f"A1:F{len(values)}"
        contents += [v[2] for v in values[1:]]
    assert contents == [f"m{i}" for i in range(7)]


def test_rollover_across_calls_and_exact_multiple(tmp_path: Path) -> None:
    with WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC"), rows_per_sheet=2) as writer:
        writer.append_many([_row("a"), _row("b")])
        writer.append_many([])
        writer.append_many(iter([_row("c"), _row("d")]))
        path = writer.commit()
    wb = openpyxl.load_workbook(path)
    assert len(wb.sheetnames) == 2  # no empty third sheet
    assert [r[2] for r in wb.worksheets[1].iter_rows(min_row=2, values_only=True)] == ["c", "d"]


def test_invalid_rows_per_sheet(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC"), rows_per_sheet=0)
    assert os.listdir(tmp_path) == []


# --- files ------------------------------------------------------------------------


def test_file_is_0600_and_no_temp_left(tmp_path: Path) -> None:
    old = os.umask(0o000)  # even a permissive umask must not widen the mode
    try:
        path = _write(tmp_path / "out.xlsx", [_row("x")])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["out.xlsx"]


def test_temp_file_is_hidden_private_and_in_target_dir(tmp_path: Path) -> None:
    writer = WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC"))
    writer.append_many([_row("x")])
    names = os.listdir(tmp_path)
    assert names and all(n.startswith(".out.xlsx.") and n.endswith(".tmp") for n in names)
    assert all(stat.S_IMODE(os.stat(tmp_path / n).st_mode) == 0o600 for n in names)
    writer.abort()
    writer.abort()  # idempotent
    assert os.listdir(tmp_path) == []


def test_context_exit_without_commit_and_exception_remove_temp(tmp_path: Path) -> None:
    with WorkbookWriter(tmp_path / "a.xlsx", ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError, match="boom"), WorkbookWriter(tmp_path / "b.xlsx", ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
    with pytest.raises(RuntimeError):
        writer.append_many([_row("y")])


def test_error_inside_row_iterable_aborts(tmp_path: Path) -> None:
    def rows():
        yield _row("ok")
        raise ValueError("bad source")

    writer = WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC"))
    with pytest.raises(ValueError, match="bad source"):
        writer.append_many(rows())
    assert os.listdir(tmp_path) == []


def test_commit_never_overwrites(tmp_path: Path) -> None:
    existing = tmp_path / "out.xlsx"
    existing.write_bytes(b"precious")
    with WorkbookWriter(existing, ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
        with pytest.raises(FileExistsError):
            writer.commit()
    assert existing.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["out.xlsx"]


def test_commit_uses_first_free_candidate(tmp_path: Path) -> None:
    first = tmp_path / "out.xlsx"
    first.write_bytes(b"precious")
    second = tmp_path / "out_2.xlsx"
    with WorkbookWriter(first, ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
        used = writer.commit([first, second, tmp_path / "out_3.xlsx"])
        assert writer.commit() == used  # repeated commit returns the same path
    assert used == second
    assert first.read_bytes() == b"precious"
    assert openpyxl.load_workbook(second)[SHEET_TITLE]["C2"].value == "x"
    assert sorted(os.listdir(tmp_path)) == ["out.xlsx", "out_2.xlsx"]


def test_commit_does_not_follow_symlink_candidate(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    (tmp_path / "out.xlsx").symlink_to(target)
    with WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
        used = writer.commit([tmp_path / "out.xlsx", tmp_path / "out_2.xlsx"])
    assert used == tmp_path / "out_2.xlsx"
    assert not target.exists()


def test_disk_full_during_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    with WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC")) as writer:
        monkeypatch.setattr(workbook_module.os, "fsync", full)  # the package is written, not yet on disk
        writer.append_many([_row("x")])
        with pytest.raises(OSError) as info:
            writer.commit()
    assert info.value.errno == errno.ENOSPC
    assert os.listdir(tmp_path) == []


def test_link_failure_other_than_exists_propagates_and_cleans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(workbook_module.os, "link", broken_link)
    with WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
        with pytest.raises(OSError):
            writer.commit()
    assert os.listdir(tmp_path) == []


def test_link_unsupported_falls_back_to_exclusive_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(workbook_module.os, "link", no_links)
    (tmp_path / "out.xlsx").write_bytes(b"precious")
    with WorkbookWriter(tmp_path / "out.xlsx", ZoneInfo("UTC")) as writer:
        writer.append_many([_row("x")])
        used = writer.commit([tmp_path / "out.xlsx", tmp_path / "out_2.xlsx"])
    assert used == tmp_path / "out_2.xlsx"
    assert (tmp_path / "out.xlsx").read_bytes() == b"precious"
    assert stat.S_IMODE(os.stat(used).st_mode) == 0o600
    assert openpyxl.load_workbook(used)[SHEET_TITLE]["C2"].value == "x"
    assert sorted(os.listdir(tmp_path)) == ["out.xlsx", "out_2.xlsx"]


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics")
def test_file_size_limit_in_subprocess_leaves_nothing(tmp_path: Path) -> None:
    # A real write failure: RLIMIT_FSIZE makes write() fail with EFBIG (SIGXFSZ
    # ignored), first while openpyxl streams the sheet, like a full disk would.
    script = textwrap.dedent(
        """
        import errno, os, resource, signal, sys
        from datetime import datetime, timezone
        from pathlib import Path
        from zoneinfo import ZoneInfo
        from wa_export.workbook.writer import WorkbookWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        out = Path(sys.argv[1]) / "out.xlsx"
        ts = datetime(2024, 5, 1, tzinfo=timezone.utc)
        rows = (("+4915112345678", "+4930123456", f"message {i} " * 20, ts, "received", "w") for i in range(50_000))
        try:
            with WorkbookWriter(out, ZoneInfo("UTC")) as writer:
                writer.append_many(rows)
                writer.commit()
        except OSError as exc:
            print("OSError", exc.errno in (errno.EFBIG, errno.ENOSPC))
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "OSError True"
    assert os.listdir(tmp_path) == []


def test_lxml_serialisation_error_becomes_oserror(monkeypatch: pytest.MonkeyPatch) -> None:
    save = workbook_module.Workbook.save

    def full_disk(workbook: object, target: object) -> None:
        save(workbook, target)  # what openpyxl started is finished; lxml then reports the full disk
        raise workbook_module._LxmlSerialisationError("IO_ENOSPC")

    monkeypatch.setattr(workbook_module.Workbook, "save", full_disk)
    with pytest.raises(OSError) as caught:
        workbook_module.package_template(99)
    assert caught.value.errno == errno.ENOSPC
