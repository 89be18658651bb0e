"""Streaming Excel writer for the export workbook, on openpyxl's write-only internals.

Bypassing openpyxl's public row API (``ws.append`` of cell objects) is paid for by bench/RESULTS.md
(run.py table): at 100,000 rows ours writes 26,618 rows/s, bare openpyxl write-only 8,445 (3.15x);
its profile section: ``append_many`` 1.42 s -> 0.74 s per 100k rows once rows are XML text
instead of lxml elements. openpyxl still builds the package, styles, views and filters; rows
are formatted here (workbook/cells.py: inline strings, never a formula) and written in chunks
into the sheet file after flushing openpyxl's lxml stream. The internals used (``WorksheetWriter``,
its ``xf`` stream, ``ws._writer``/``ws._rows``) are the ones ``WriteOnlyWorksheet._write_rows``
uses; tests pin the XML.
"""

from __future__ import annotations

import itertools
import os
import secrets
import weakref
from collections.abc import Generator, Iterable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import Cell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.worksheet import _writer as _ws_writer_module
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet._writer import WorksheetWriter
from openpyxl.xml.constants import SHEET_MAIN_NS
from openpyxl.xml.functions import xmlfile

from wa_export.workbook.cells import CELL_TEXT_LIMIT, TextCellTails, cell_text, text_cell
from wa_export.workbook.layout import TOP, WRAPPED, column_widths, property_values, zone_name
from wa_export.workbook.publish import (
    create_private_file,
    fsync_dir,
    os_error_from,
    publish_without_overwrite,
    unlink_quietly,
)

try:  # openpyxl uses lxml when it is installed; its write errors are not OSError
    from lxml.etree import SerialisationError as _LxmlSerialisationError
except ImportError:  # pragma: no cover - et_xmlfile fallback raises OSError itself

    class _LxmlSerialisationError(Exception):  # type: ignore[no-redef]
        pass


__all__ = ["CELL_TEXT_LIMIT", "HEADER", "MAX_DATA_ROWS_PER_SHEET", "SHEET_TITLE", "WorkbookWriter", "cell_text"]

HEADER: tuple[str, ...] = (
    "Sender Phone Number",
    "Receiver Phone Number",
    "Message Content",
    "Timestamp",
    "Status",
    "Workspace ID",
)
SHEET_TITLE = "WhatsApp Messages"
MAX_DATA_ROWS_PER_SHEET = 1_048_575  # Excel's 1,048,576 rows minus the header row
TIMESTAMP_FORMAT = "yyyy-mm-dd hh:mm:ss"

_LETTERS = "ABCDEF"
# Room for the values (phone numbers, text, date-time, status, id); headers may widen them.
_COLUMN_WIDTHS = column_widths(_LETTERS, HEADER, (20, 22, 80, 20, 15, 26))
_LAST_COLUMN = _LETTERS[-1]
_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill(fill_type="solid", fgColor="305496")
_HEADER_ALIGNMENT = Alignment(vertical="center")
# Rows formatted as XML text are written to the sheet file this many at a time.
_CHUNK_ROWS = 1_000
_EXCEL_1900_03_01 = 61.0  # serials below this hit Excel's 1900 leap-year bug
_EXCEL_MAX_SERIAL = 2_958_466.0  # 10000-01-01: Excel's date range ends before
_UNIX_EPOCH_SERIAL = 25_569.0  # 1970-01-01 in the 1900 date system
_NAIVE_UNIX_EPOCH = datetime(1970, 1, 1)


class WorkbookWriter:
    """Stream rows into a new workbook and publish it atomically; leaving without ``commit()`` removes every file."""

    def __init__(
        self,
        final_path: Path | str,
        timezone: ZoneInfo | dt_timezone,
        *,
        rows_per_sheet: int = MAX_DATA_ROWS_PER_SHEET,
        workspace_name: str | None = None,
        timezone_name: str | None = None,
    ) -> None:
        self._open_temporary(final_path, timezone, rows_per_sheet)
        try:
            self._wb = Workbook(write_only=True)
            for attribute, value in property_values(workspace_name, timezone_name or zone_name(timezone)).items():
                setattr(self._wb.properties, attribute, value)
            self._sheets: list[WriteOnlyWorksheet] = []
            self._ws: WriteOnlyWorksheet | None = None
            self._xf: Any = None
            self._handle: Any = None  # the current sheet's file, for rows written as XML text
            self._styles: dict[str, str] = {}  # style attribute (' s="N"') per kind of data cell
            self._new_sheet()
        except BaseException:
            self._cleanup_files()
            raise

    def _open_temporary(self, final_path: Path | str, timezone: ZoneInfo | dt_timezone, rows_per_sheet: int) -> None:
        if not 1 <= rows_per_sheet <= MAX_DATA_ROWS_PER_SHEET:
            raise ValueError(f"rows_per_sheet must be between 1 and {MAX_DATA_ROWS_PER_SHEET}")
        self.final_path = Path(final_path)
        self._directory = self.final_path.parent
        self._tz = timezone
        self._rows_per_sheet = rows_per_sheet
        self.rows_written = 0  # data rows (header rows not counted)
        self._state = "open"  # open -> committed | aborted
        self._published: Path | None = None
        # Hidden ('.' prefix, '.tmp' suffix): no *.xlsx glob or cleanup pattern mails or deletes it half-written.
        token = secrets.token_hex(6)
        self._tmp_path = self._directory / f".{self.final_path.name}.{token}.tmp"
        self._sheet_tmp_prefix = f".{self.final_path.name}.{token}.sheet"
        self._sheet_tmp_paths: list[str] = []
        self._offset_cache: dict[int, float] = {}
        self._top_tails: TextCellTails | None = None  # the top-aligned text cells' remembered XML
        self._fd: int | None = create_private_file(self._tmp_path)
        # Safety net if the writer is dropped without commit()/abort().
        weakref.finalize(self, _remove_files, self._tmp_path, self._sheet_tmp_paths)

    def append(
        self,
        sender: object,
        receiver: object,
        content: object,
        timestamp: datetime | None,
        status: str,
        workspace_id: str,
    ) -> None:
        self.append_many(((sender, receiver, content, timestamp, status, workspace_id),))

    def append_many(self, rows: Iterable[tuple[object, object, object, datetime | None, str, str]]) -> None:
        """Write rows in order; the fast path the exporter uses."""
        self._require_open()
        with self._aborted_on_failure():
            self._append_rows(rows)

    @contextmanager
    def _aborted_on_failure(self) -> Iterator[None]:
        """Remove the temp files at once on a failed write; lxml's write errors become the OSError they are."""
        try:
            yield
        except _LxmlSerialisationError as exc:
            self.abort()
            raise os_error_from(exc) from exc
        except BaseException:
            self.abort()
            raise

    def commit(self, candidates: Iterable[Path | str] | None = None) -> Path:
        """Finish and publish under the first free name of ``candidates`` (default ``final_path``), else FileExistsError."""
        if self._state == "committed" and self._published is not None:
            return self._published
        self._require_open()
        with self._aborted_on_failure():
            self._finish_sheet()
            self._save()
            names = candidates if candidates is not None else (self.final_path,)
            published = publish_without_overwrite(self._tmp_path, names, self.final_path)
        self._state = "committed"
        self._published = published
        self._cleanup_files()
        fsync_dir(published.parent)
        return published

    def abort(self) -> None:
        """Throw the workbook away and remove every temporary file. Idempotent."""
        if self._state == "committed":
            return
        self._state = "aborted"
        for ws in getattr(self, "_sheets", ()):
            # Release lxml's file handles; errors here (disk still full) do not matter.
            for stream in ("_rows", "_writer"):
                with suppress(Exception):
                    getattr(ws, stream).close()
        self._cleanup_files()

    def __enter__(self) -> WorkbookWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._state != "committed":
            self.abort()

    def _append_rows(self, rows: Iterable[tuple[Any, ...]]) -> None:
        text = cell_text
        cell = text_cell
        serial_of = self._excel_serial
        limit = self._rows_per_sheet
        rows = iter(rows)
        while True:
            if self._sheet_row >= limit:
                # Only start the next sheet once a row for it exists, so an
                # exact multiple of rows_per_sheet leaves no empty sheet.
                try:
                    first = next(rows)
                except StopIteration:
                    return
                self._finish_sheet()
                self._new_sheet()
                rows = itertools.chain((first,), rows)
            date_style, wrap, top = self._data_styles()
            tails = self._top_tails
            if tails is None:
                tails = self._top_tails = TextCellTails(top)
            row = self._sheet_row + 1  # the header is row 1
            budget = limit - self._sheet_row
            written = 0
            chunk: list[str] = []
            for sender, receiver, content, ts, status, workspace_id in rows:
                row += 1
                r = str(row)
                if ts is None:
                    vd = ""
                else:
                    serial = serial_of(ts)
                    if serial is None:  # not a datetime, or outside Excel's date range
                        vd = cell("D", r, text(ts.isoformat() if isinstance(ts, datetime) else ts), top)
                    else:
                        # repr: shortest round-trip decimal, never an exponent in this range
                        vd = f'<c r="D{r}"{date_style} t="n"><v>{serial!r}</v></c>'
                # Columns whose values repeat row after row come from the remembered tails; the str
                # test is inline because a method call per cell would cost what the dictionary saves.
                a = tails[sender] if type(sender) is str else tails.uncached(sender)
                b = tails[receiver] if type(receiver) is str else tails.uncached(receiver)
                e = tails[status] if type(status) is str else tails.uncached(status)
                f = tails[workspace_id] if type(workspace_id) is str else tails.uncached(workspace_id)
                va = f'<c r="A{r}"{a}' if a else ""
                vb = f'<c r="B{r}"{b}' if b else ""
                ve = f'<c r="E{r}"{e}' if e else ""
                vf = f'<c r="F{r}"{f}' if f else ""
                chunk.append(f'<row r="{r}">{va}{vb}{cell("C", r, text(content), wrap)}{vd}{ve}{vf}</row>')
                written += 1
                if len(chunk) == _CHUNK_ROWS:
                    self._write_xml(chunk)
                if written == budget:
                    break
            if chunk:
                self._write_xml(chunk)
            self._sheet_row += written
            self.rows_written += written
            if written < budget:
                return

    def _write_xml(self, chunk: list[str]) -> None:
        self._xf.flush()
        self._handle.write("".join(chunk).encode("utf-8"))
        chunk.clear()

    def _data_styles(self) -> tuple[str, str, str]:
        """The ``s="N"`` attributes of date, wrapped-text and other data cells."""
        if not self._styles:
            # Registering a style once through openpyxl gives its workbook-wide id.
            kinds = {"date": (TIMESTAMP_FORMAT, TOP), "wrap": ("General", WRAPPED), "top": ("General", TOP)}
            for kind, (number_format, alignment) in kinds.items():
                cell = WriteOnlyCell(self._ws)
                cell.number_format = number_format
                cell.alignment = alignment
                self._styles[kind] = f' s="{cell.style_id}"'
        return self._styles["date"], self._styles["wrap"], self._styles["top"]

    def _excel_serial(self, ts: object) -> float | None:
        """Excel serial (1900 system) of ``ts`` as wall time in the export zone; cached per UTC hour without a DST change."""
        if not isinstance(ts, datetime):
            return None
        try:
            if ts.tzinfo is None:  # pymongo's default: naive UTC
                seconds = (ts - _NAIVE_UNIX_EPOCH).total_seconds()
            else:
                seconds = ts.timestamp()
            hour = int(seconds // 3600)
            offset = self._offset_cache.get(hour)
            if offset is None:
                offset = self._utc_offset(seconds)
                start = hour * 3600
                if self._utc_offset(start) == self._utc_offset(start + 3599.999) == offset:
                    if len(self._offset_cache) >= 65_536:  # years of hours: keep memory bounded
                        self._offset_cache.clear()
                    self._offset_cache[hour] = offset
            serial = _UNIX_EPOCH_SERIAL + (seconds + offset) / 86400.0
        except (OverflowError, OSError, ValueError):
            return None
        if _EXCEL_1900_03_01 <= serial < _EXCEL_MAX_SERIAL:
            return serial
        return None

    def _utc_offset(self, seconds: float) -> float:
        delta = datetime.fromtimestamp(seconds, self._tz).utcoffset()
        return delta.total_seconds() if delta is not None else 0.0

    def _new_sheet(self) -> None:
        index = len(self._sheets) + 1
        title = SHEET_TITLE if index == 1 else f"{SHEET_TITLE} ({index})"
        ws: WriteOnlyWorksheet = self._wb.create_sheet(title)
        self._sheets.append(ws)
        self._ws = ws
        # Views and column widths are written before the first row, so set them now.
        ws.freeze_panes = "A2"
        for letter, width in _COLUMN_WIDTHS.items():
            ws.column_dimensions[letter].width = width
        # Next to the output, private, not in the system temp dir openpyxl would use (outside our 0700 folder).
        sheet_tmp = self._directory / f"{self._sheet_tmp_prefix}{index}.tmp"
        os.close(create_private_file(sheet_tmp))
        self._sheet_tmp_paths.append(str(sheet_tmp))
        _ws_writer_module.ALL_TEMP_FILES.append(str(sheet_tmp))
        writer = _SheetWriter(ws, out=str(sheet_tmp))
        ws._writer = writer
        self._handle = writer.handle
        writer.write_top()
        stream = _row_stream(writer)
        self._xf = next(stream)
        ws._rows = stream  # ws.close() ends our stream exactly like its own
        self._sheet_row = 0  # data rows in the current sheet
        header_cells: list[Cell] = []
        for column, title in enumerate(HEADER, 1):
            cell = WriteOnlyCell(ws, value=title)
            cell.column = column
            cell.row = 1
            cell.font, cell.fill, cell.alignment = _HEADER_FONT, _HEADER_FILL, _HEADER_ALIGNMENT
            header_cells.append(cell)
        ws._writer.write_row(self._xf, header_cells, 1)

    def _finish_sheet(self) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            return
        # The filter is written after the rows, so the exact used range is known.
        ws.auto_filter.ref = f"A1:{_LAST_COLUMN}{self._sheet_row + 1}"
        ws.close()

    def _save(self) -> None:
        assert self._fd is not None
        with os.fdopen(self._fd, "w+b", closefd=True) as handle:
            self._fd = None
            self._wb.save(handle)
            handle.flush()
            os.fsync(handle.fileno())

    def _require_open(self) -> None:
        if self._state != "open":
            raise RuntimeError(f"workbook writer is already {self._state}")

    def _cleanup_files(self) -> None:
        if self._fd is not None:
            with suppress(OSError):
                os.close(self._fd)
            self._fd = None
        _remove_files(self._tmp_path, self._sheet_tmp_paths)


def _remove_files(tmp_path: Path, sheet_paths: list[str]) -> None:
    for path in sheet_paths:
        unlink_quietly(path)
        if path in _ws_writer_module.ALL_TEMP_FILES:
            _ws_writer_module.ALL_TEMP_FILES.remove(path)
    sheet_paths.clear()
    unlink_quietly(tmp_path)


class _SheetWriter(WorksheetWriter):
    """openpyxl's sheet writer on a ``handle`` we open (no symlinks followed), so rows can go in as XML text."""

    handle: Any = None

    def get_stream(self) -> Generator[Any, Any, None]:
        fd = os.open(self.out, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "wb") as handle:
            self.handle = handle
            with xmlfile(handle) as xf, xf.element("worksheet", xmlns=SHEET_MAIN_NS):
                try:
                    while True:
                        el = yield
                        if el is True:
                            yield xf
                        elif el is not None:
                            xf.write(el)
                except GeneratorExit:
                    pass


def _row_stream(writer: WorksheetWriter) -> Generator[Any, None, None]:
    """WriteOnlyWorksheet._write_rows minus its cell objects: open ``<sheetData>``, hand out the stream."""
    xf = writer.xf.send(True)
    with xf.element("sheetData"):
        try:
            yield xf
        except GeneratorExit:
            pass
    writer.xf.send(None)
