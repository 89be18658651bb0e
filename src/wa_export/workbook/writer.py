"""The export workbook: rows formatted as XML text (workbook/cells.py), in a package openpyxl made once.

openpyxl writes one workbook per process and sheet count (`package_template`); every export is that
package with its own rows, filter ranges, properties and time. Writing rows ourselves is paid for by
bench/RESULTS.md (run.py table): several times XlsxWriter constant_memory rows/s, flat memory.
Why this module is long: the template and the writer that fills it must agree byte for byte.
"""

from __future__ import annotations

import io
import itertools
import os
import secrets
import shutil
import tempfile
import threading
import weakref
import zipfile
from collections.abc import Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from datetime import timezone as dt_timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from zoneinfo import ZoneInfo

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.packaging.core import DocumentProperties
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.xml.functions import tostring

from wa_export.workbook.cells import CELL_TEXT_LIMIT, TextCellTails, cell_text, text_cell
from wa_export.workbook.layout import TOP, WRAPPED, column_widths, print_layout, property_values, zone_name
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

# Room for the values (phone numbers, text, date-time, status, id); headers may widen them.
_COLUMN_WIDTHS = column_widths("ABCDEF", HEADER, (20, 22, 80, 20, 15, 26))
_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill(fill_type="solid", fgColor="305496")
_HEADER_ALIGNMENT = Alignment(vertical="center")
_CHUNK_ROWS = 1_000  # rows formatted as XML text are written this many at a time
_EXCEL_1900_03_01 = 61.0  # serials below this hit Excel's 1900 leap-year bug
_EXCEL_MAX_SERIAL = 2_958_466.0  # 10000-01-01: Excel's date range ends before
_UNIX_EPOCH_SERIAL = 25_569.0  # 1970-01-01 in the 1900 date system
_NAIVE_UNIX_EPOCH = datetime(1970, 1, 1)

SHEET_PREFIX = "xl/worksheets/sheet"
WORKBOOK_PART = "xl/workbook.xml"
CORE_PART = "docProps/core.xml"
_PROBE_FILTER = "$A$1:$F$2"
_PROBE_REF = b'ref="A1:F2"'
_CORE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_PLACEHOLDER_TIME = datetime(2001, 2, 3, 4, 5, 6)
# A sheet's XML stays in memory up to this size (a scheduled run's small workbooks never touch
# the disk twice), then goes on in an unnamed private temporary file next to the workbook.
SHEET_SPOOL_BYTES = 4 * 1024 * 1024
_STREAM_CHUNK = 1024 * 1024  # a spilled sheet is compressed into the package this much at a time


@dataclass(frozen=True)
class PackageTemplate:
    """A workbook of some number of sheets: its fixed parts and the patterns of the others."""

    order: tuple[str, ...]  # member names in openpyxl's order
    fixed: dict[str, bytes]
    sheet_head: bytes  # up to and including the header row, inside <sheetData>
    sheet_tail: tuple[bytes, bytes]  # around the autofilter range, after the last row
    workbook: tuple[str, ...]  # workbook.xml split at each sheet's filter range
    core: str  # core.xml with a placeholder per property and for the time
    styles: tuple[str, str, str]  # the ' s="N"' of date, wrapped-text and other data cells


_templates: dict[int, PackageTemplate] = {}
_lock = threading.Lock()


def package_template(sheets: int) -> PackageTemplate:
    """The template for workbooks of `sheets` sheets, made by openpyxl once per process."""
    with _lock:
        template = _templates.get(sheets)
        if template is None:
            try:
                template = _templates[sheets] = _capture(sheets)
            except _LxmlSerialisationError as error:
                raise os_error_from(error) from error
        return template


def _capture(sheets: int) -> PackageTemplate:
    """openpyxl's workbook of `sheets` sheets (header, one probe row each), taken apart."""
    workbook = Workbook(write_only=True)
    styles: tuple[str, ...] = ()
    for number in range(1, sheets + 1):
        sheet = workbook.create_sheet(SHEET_TITLE if number == 1 else f"{SHEET_TITLE} ({number})")
        sheet.freeze_panes = "A2"  # views, widths and page setup are written before the first row
        print_layout(sheet)
        for letter, width in _COLUMN_WIDTHS.items():
            sheet.column_dimensions[letter].width = width
        header = [WriteOnlyCell(sheet, value=title) for title in HEADER]
        for cell in header:
            cell.font, cell.fill, cell.alignment = _HEADER_FONT, _HEADER_FILL, _HEADER_ALIGNMENT
        sheet.append(header)
        if not styles:  # registered once, after the header's: the style ids of every export's data cells
            kinds = ((TIMESTAMP_FORMAT, TOP), ("General", WRAPPED), ("General", TOP))
            styles = tuple(_style_attribute(sheet, number_format, alignment) for number_format, alignment in kinds)
        sheet.append(["probe"] * len(HEADER))
        sheet.auto_filter.ref = "A1:F2"
    buffer = io.BytesIO()
    workbook.save(buffer)
    with zipfile.ZipFile(buffer) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    head, _, rest = contents[f"{SHEET_PREFIX}1.xml"].partition(b'<row r="2"')
    tail = rest[rest.index(b"</sheetData>") :]
    for number in range(1, sheets + 1):  # every sheet is the same apart from its rows
        sheet_xml = contents[f"{SHEET_PREFIX}{number}.xml"]
        if not (sheet_xml.startswith(head) and sheet_xml.endswith(tail)):
            raise RuntimeError("openpyxl wrote sheets that differ beyond their rows; the template cannot be used")
    workbook_xml = tuple(contents[WORKBOOK_PART].decode().split(_PROBE_FILTER))
    if len(workbook_xml) != sheets + 1:
        raise RuntimeError("the workbook part does not name one filter range per sheet")
    before_ref, _, after_ref = tail.partition(_PROBE_REF)
    variable = (WORKBOOK_PART, CORE_PART, SHEET_PREFIX)
    fixed = {name: content for name, content in contents.items() if not name.startswith(variable)}
    date, wrap, top = styles
    return PackageTemplate(
        tuple(contents), fixed, head, (before_ref, after_ref), workbook_xml, _core_template(), (date, wrap, top)
    )


def _style_attribute(sheet: Any, number_format: str, alignment: Alignment) -> str:
    cell = WriteOnlyCell(sheet)
    cell.number_format, cell.alignment = number_format, alignment
    return f' s="{cell.style_id}"'  # registering it gives its workbook-wide id


def _core_template() -> str:
    """core.xml as openpyxl writes it, with placeholders where each workbook's properties and time go."""
    properties = DocumentProperties()
    fields = property_values(None, "")
    for attribute in fields:
        setattr(properties, attribute, _placeholder(attribute))
    properties.created = properties.modified = _PLACEHOLDER_TIME
    core: str = tostring(properties.to_tree()).decode("utf-8")
    stamp = _PLACEHOLDER_TIME.strftime(_CORE_TIME_FORMAT)
    if core.count(stamp) != 2 or any(core.count(_placeholder(attribute)) != 1 for attribute in fields):
        raise RuntimeError("openpyxl wrote the document properties differently; the template cannot be used")
    return core.replace(stamp, _placeholder("time"))


def _placeholder(name: str) -> str:
    return f"WAEXPORTPLACEHOLDER{name}END"


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
        if not 1 <= rows_per_sheet <= MAX_DATA_ROWS_PER_SHEET:
            raise ValueError(f"rows_per_sheet must be between 1 and {MAX_DATA_ROWS_PER_SHEET}")
        self.final_path = Path(final_path)
        self._directory = self.final_path.parent
        self._tz = timezone
        self._rows_per_sheet = rows_per_sheet
        self._properties = property_values(workspace_name, timezone_name or zone_name(timezone))
        template = package_template(1)
        self._head, self._tail, self._styles = template.sheet_head, template.sheet_tail, template.styles
        self.rows_written = 0  # data rows (header rows not counted)
        self._state = "open"  # open -> committed | aborted
        self._published: Path | None = None
        self._offset_cache: dict[int, float] = {}
        self._top_tails: TextCellTails | None = None  # the top-aligned text cells' remembered XML
        self._spools: list[tempfile.SpooledTemporaryFile[bytes]] = []
        self._sheet_rows: list[int] = []  # data rows of each finished sheet
        self._handle: Any = None  # the current sheet's spool
        # Hidden ('.' prefix, '.tmp' suffix): no *.xlsx glob or cleanup pattern mails or deletes it half-written.
        self._tmp_path = self._directory / f".{self.final_path.name}.{secrets.token_hex(6)}.tmp"
        self._fd: int | None = create_private_file(self._tmp_path)
        weakref.finalize(self, unlink_quietly, self._tmp_path)  # if dropped without commit()/abort()
        try:
            self._new_sheet()
        except BaseException:
            self.abort()
            raise

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
        try:
            self._append_rows(rows)
        except BaseException:
            self.abort()
            raise

    def commit(self, candidates: Iterable[Path | str] | None = None, *, password: str | None = None) -> Path:
        """Finish and publish under the first free name of ``candidates`` (default ``final_path``), else FileExistsError.

        With a ``password`` what is published is the workbook encrypted with it (workbook/encryption.py): the
        plain one never appears under a visible name.
        """
        if self._state == "committed" and self._published is not None:
            return self._published
        self._require_open()
        ready = self._tmp_path
        try:
            self._finish_sheet()
            self._save()
            if password is not None:
                from wa_export.workbook.encryption import encrypt_workbook  # cryptography only when asked for

                ready = encrypt_workbook(self._tmp_path, self._tmp_path.with_suffix(".encrypted.tmp"), password)
            names = candidates if candidates is not None else (self.final_path,)
            published = publish_without_overwrite(ready, names, self.final_path)
        except BaseException:
            if ready != self._tmp_path:
                unlink_quietly(ready)
            self.abort()
            raise
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
        for spool in self._spools:
            with suppress(OSError):  # a full disk may fail the flush: the file goes anyway
                spool.close()
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
        date_style, wrap, top = self._styles
        tails = self._top_tails
        if tails is None:
            tails = self._top_tails = TextCellTails(top)
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
        self._handle.write("".join(chunk).encode("utf-8"))
        chunk.clear()

    def _excel_serial(self, ts: object) -> float | None:
        """Excel serial (1900 system) of ``ts`` as wall time in the export zone; offsets cached per UTC hour."""
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
        # Unnamed once on disk (O_TMPFILE, or unlinked at once): nothing to clean up, and mode 0600.
        spool = tempfile.SpooledTemporaryFile(SHEET_SPOOL_BYTES, dir=str(self._directory))
        self._spools.append(spool)
        self._handle = spool
        self._sheet_row = 0  # data rows in the current sheet
        spool.write(self._head)

    def _finish_sheet(self) -> None:
        """The rows are done: the autofilter covers exactly them, as openpyxl writes it."""
        if self._handle is None:
            return
        before_ref, after_ref = self._tail
        self._handle.write(before_ref + f'ref="A1:F{self._sheet_row + 1}"'.encode() + after_ref)
        self._sheet_rows.append(self._sheet_row)
        self._handle = None

    def _save(self) -> None:
        assert self._fd is not None
        template = package_template(len(self._spools))
        ranges = [f"$A$1:$F${rows + 1}" for rows in self._sheet_rows]
        workbook = template.workbook[0] + "".join(
            r + text for r, text in zip(ranges, template.workbook[1:], strict=True)
        )
        core = template.core.replace(_placeholder("time"), datetime.now(UTC).strftime(_CORE_TIME_FORMAT))
        for attribute, value in self._properties.items():
            core = core.replace(_placeholder(attribute), xml_escape(value))  # as lxml escapes text
        variable = {WORKBOOK_PART: workbook.encode(), CORE_PART: core.encode("utf-8")}
        with open(self._fd, "w+b") as handle:
            self._fd = None
            with zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
                for name in template.order:
                    if not name.startswith(SHEET_PREFIX):
                        archive.writestr(name, variable.get(name) or template.fixed[name])
                        continue
                    spool = self._spools[int(name[len(SHEET_PREFIX) : -len(".xml")]) - 1]
                    size = spool.tell()
                    spool.seek(0)
                    # zipfile's own rule for a part of known size: ZIP64 only where the size needs it.
                    with archive.open(name, "w", force_zip64=size * 1.05 > zipfile.ZIP64_LIMIT) as part:
                        shutil.copyfileobj(spool, part, _STREAM_CHUNK)
                    spool.close()
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
        unlink_quietly(self._tmp_path)
