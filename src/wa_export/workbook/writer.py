"""The export workbook: rows formatted as XML text (workbook/cells.py) into the package openpyxl makes once per
process and sheet count: several times XlsxWriter constant_memory rows/s, flat memory."""

from __future__ import annotations

import errno
import functools
import io
import itertools
import math
import os
import shutil
import tempfile
import weakref
import zipfile
from collections.abc import Iterable
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path

from lxml.etree import SerialisationError as _LxmlSerialisationError  # lxml comes with yagmail's premailer
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.packaging.core import DocumentProperties
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.worksheet.properties import PageSetupProperties
from openpyxl.xml.functions import tostring

from wa_export.workbook import publish
from wa_export.workbook.cells import cell_text, text_cell_tail, text_cell_tails

HEADER = ("Sender Phone Number", "Receiver Phone Number", "Message Content", "Timestamp", "Status", "Workspace ID")
SHEET_TITLE = "WhatsApp Messages"
MAX_DATA_ROWS_PER_SHEET = 1_048_575  # Excel's 1,048,576 rows minus the header row
_CHUNK_ROWS = 1_000  # rows formatted as XML text are written this many at a time
_EXCEL_1900_03_01 = 61.0  # serials below this hit Excel's 1900 leap-year bug
_EXCEL_MAX_SERIAL = 2_958_466.0  # 10000-01-01: Excel's date range ends before
_EXCEL_EPOCH, _DAY = datetime(1899, 12, 30), timedelta(days=1)
SHEET_PREFIX = "xl/worksheets/sheet"
WORKBOOK_PART = "xl/workbook.xml"
CORE_PART = "docProps/core.xml"
# A sheet's XML stays in memory up to this size (small workbooks never touch the disk twice), then spills.
SHEET_SPOOL_BYTES = 4 * 1024 * 1024
_STREAM_CHUNK = 1024 * 1024  # a spilled sheet is compressed into the package this much at a time


@dataclass(frozen=True)
class PackageTemplate:
    order: tuple[str, ...]  # member names in openpyxl's order
    fixed: dict[str, bytes]
    sheet_head: bytes  # up to and including the header row, inside <sheetData>
    sheet_tail: tuple[bytes, bytes]  # around the autofilter range, after the last row
    workbook: tuple[str, ...]  # workbook.xml split at each sheet's filter range
    styles: tuple[str, ...]  # the ' s="N"' of date, wrapped-text and other data cells


@functools.cache
def package_template(sheets: int) -> PackageTemplate:
    """openpyxl's workbook of `sheets` sheets (header and one probe row each), taken apart."""
    workbook = Workbook(write_only=True)
    styles: list[str] = []
    for number in range(1, sheets + 1):
        sheet = workbook.create_sheet(SHEET_TITLE if number == 1 else f"{SHEET_TITLE} ({number})")
        sheet.freeze_panes = "A2"
        # Printed as it reads on screen: landscape, one page wide, the header on every page.
        sheet.page_setup.orientation = "landscape"
        sheet.page_setup.fitToWidth, sheet.page_setup.fitToHeight = 1, 0
        sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
        sheet.print_title_rows = "1:1"
        # Room for the values; a bold header (x1.1) with its filter drop-down (3 characters) may widen them.
        for letter, title, minimum in zip("ABCDEF", HEADER, (20, 22, 80, 20, 15, 26), strict=True):
            sheet.column_dimensions[letter].width = max(minimum, math.ceil(len(title) * 1.1) + 3)
        header = [WriteOnlyCell(sheet, value=title) for title in HEADER]
        for cell in header:
            cell.font = Font(bold=True, color="FFFFFF")
            cell.fill = PatternFill(fill_type="solid", fgColor="305496")
            cell.alignment = Alignment(vertical="center")
        sheet.append(header)
        if not styles:  # date, wrapped and other data cells, top-aligned so a tall row still reads across
            for number_format, wrap in (("yyyy-mm-dd hh:mm:ss", False), ("General", True), ("General", False)):
                cell = WriteOnlyCell(sheet)
                cell.number_format, cell.alignment = number_format, Alignment(vertical="top", wrap_text=wrap or None)
                styles.append(f' s="{cell.style_id}"')
        sheet.append(["probe"] * len(HEADER))
        sheet.auto_filter.ref = "A1:F2"
    buffer = io.BytesIO()
    try:  # the sheets go through temporary files, written when saved
        workbook.save(buffer)
    except _LxmlSerialisationError as error:  # openpyxl writes with lxml: 'IO_ENOSPC' on a full disk is no OSError
        message = str(error)
        code = getattr(errno, message[3:], errno.EIO) if message.startswith("IO_") else errno.EIO
        raise OSError(code, f"{os.strerror(code)} (while writing the workbook: {message})") from error
    with zipfile.ZipFile(buffer) as archive:
        contents = {name: archive.read(name) for name in archive.namelist()}
    head, _, rest = contents[f"{SHEET_PREFIX}1.xml"].partition(b'<row r="2"')
    tail = rest[rest.index(b"</sheetData>") :]
    workbook_xml = tuple(contents[WORKBOOK_PART].decode().split("$A$1:$F$2"))
    sheet_xml = [contents[f"{SHEET_PREFIX}{number}.xml"] for number in range(1, sheets + 1)]
    if not all(xml.startswith(head) and xml.endswith(tail) for xml in sheet_xml):
        raise RuntimeError("openpyxl wrote sheets that differ beyond their rows; the template cannot be used")
    if len(workbook_xml) != sheets + 1:
        raise RuntimeError("the workbook part does not name one filter range per sheet")
    before_ref, _, after_ref = tail.partition(b'ref="A1:F2"')
    fixed = {
        name: data for name, data in contents.items() if not name.startswith((WORKBOOK_PART, CORE_PART, SHEET_PREFIX))
    }
    return PackageTemplate(tuple(contents), fixed, head, (before_ref, after_ref), workbook_xml, tuple(styles))


def _core_xml(workspace_name: str | None, zone: str) -> bytes:  # Excel's File > Info
    # Tenant text made one XML-safe line of at most 255 characters.
    name, zone = (" ".join(cell_text(text).split())[:255] for text in (workspace_name or "", zone))
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    properties = DocumentProperties(
        title=f"WhatsApp messages – {name}" if name else "WhatsApp messages",
        creator="wa-export",
        lastModifiedBy="wa-export",
        subject=f"Timestamps in {zone}",
        description=f"WhatsApp messages{f' of workspace {name}' if name else ''}, exported by wa-export. "
        f"The Timestamp column shows each message's time in {zone}.",
        created=now,
        modified=now,
    )
    return bytes(tostring(properties.to_tree()))


class WorkbookWriter(AbstractContextManager["WorkbookWriter"]):
    """Stream rows into a new workbook and publish it atomically; leaving without ``commit()`` removes every file."""

    def __init__(
        self,
        final_path: Path | str,
        timezone: tzinfo,
        *,
        rows_per_sheet: int = MAX_DATA_ROWS_PER_SHEET,
        workspace_name: str | None = None,
        timezone_name: str | None = None,
    ) -> None:
        if not 1 <= rows_per_sheet <= MAX_DATA_ROWS_PER_SHEET:
            raise ValueError(f"rows_per_sheet must be between 1 and {MAX_DATA_ROWS_PER_SHEET}")
        self.final_path = Path(final_path)
        self._tz = timezone
        self._rows_per_sheet = rows_per_sheet
        self._names = (workspace_name, timezone_name or str(timezone))  # Asia/Kolkata, or UTC+05:30
        self._template = package_template(1)
        self._tails = text_cell_tails(self._template.styles[2])  # the top-aligned text cells' remembered XML
        self.rows_written = 0  # data rows
        self._state = "open"  # then committed or aborted
        self._published: Path | None = None
        self._spools: list[tempfile.SpooledTemporaryFile[bytes]] = []
        self._sheet_rows: list[int] = []  # data rows of each sheet
        # Hidden ('.' prefix, '.tmp' suffix): no *.xlsx glob or cleanup pattern mails or deletes it half-written.
        self._tmp_path = self.final_path.parent / f".{self.final_path.name}.{os.urandom(6).hex()}.tmp"
        self._file = os.fdopen(publish.create_private_file(self._tmp_path), "w+b")
        weakref.finalize(self, publish.unlink_quietly, self._tmp_path)  # if dropped without commit()/abort()
        try:
            self._new_sheet()
        except BaseException:
            self.abort()
            raise

    def append(
        self, sender: object, receiver: object, content: object, ts: datetime | None, status: str, workspace_id: str
    ) -> None:
        self.append_many(((sender, receiver, content, ts, status, workspace_id),))

    def append_many(self, rows: Iterable[tuple[object, object, object, datetime | None, str, str]]) -> None:
        """Write rows in order; the fast path the exporter uses."""
        if self._state != "open":
            raise RuntimeError(f"workbook writer is already {self._state}")
        try:
            rows = iter(rows)
            while True:
                room = self._rows_per_sheet - self._sheet_rows[-1]
                if not room:  # a next sheet only once a row for it exists: none empty at an exact multiple
                    first = next(rows, None)
                    if first is None:
                        return
                    self._finish_sheet()
                    self._new_sheet()
                    rows, room = itertools.chain((first,), rows), self._rows_per_sheet
                if self._write_rows(itertools.islice(rows, room)) < room:
                    return
        except BaseException:
            self.abort()
            raise

    def commit(self, candidates: Iterable[Path | str] | None = None, *, password: str | None = None) -> Path:
        """Publish (encrypted with a `password`) under the first free name of `candidates`, else FileExistsError."""
        if self._published is not None:
            return self._published
        if self._state != "open":
            raise RuntimeError(f"workbook writer is already {self._state}")
        ready = self._tmp_path
        try:
            self._finish_sheet()
            self._save()
            if password is not None:
                from wa_export.workbook.encryption import encrypt_workbook  # cryptography only when asked for

                ready = encrypt_workbook(self._tmp_path, self._tmp_path.with_suffix(".encrypted.tmp"), password)
            names = candidates if candidates is not None else (self.final_path,)
            self._published = publish.publish_without_overwrite(ready, names, self.final_path)
        except BaseException:
            if ready != self._tmp_path:
                publish.unlink_quietly(ready)
            self.abort()
            raise
        self._state = "committed"
        self._cleanup_files()
        publish.fsync_dir(self._published.parent)
        return self._published

    def abort(self) -> None:
        if self._state == "committed":
            return
        self._state = "aborted"
        for spool in self._spools:
            with suppress(OSError):  # a full disk may fail the flush: the file goes anyway
                spool.close()
        self._cleanup_files()

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def _write_rows(self, rows: Iterable[tuple[object, ...]]) -> int:
        text, tail_of, serial_of, kept = cell_text, text_cell_tail, self._excel_serial, self._tails
        date_style, wrap, top = self._template.styles
        row = self._sheet_rows[-1] + 1  # the header is row 1
        first = row
        chunk: list[str] = []
        for sender, receiver, content, ts, status, ws in rows:
            row += 1
            r = str(row)
            serial = serial_of(ts)
            if serial is None:  # none, not a datetime, or outside Excel's date range: as text
                d = tail_of(text(ts.isoformat() if isinstance(ts, datetime) else ts), top)
            else:  # repr: shortest round-trip decimal, never an exponent in this range
                d = f'{date_style} t="n"><v>{serial!r}</v></c>'
            # Values that repeat row after row are remembered; only a plain str (1 == True to a cache). Each cell
            # spelled out: a loop over the six would cost a fifth of the rows' time.
            a, b, e, f = [kept(v) if type(v) is str else tail_of(text(v), top) for v in (sender, receiver, status, ws)]
            c = tail_of(text(content), wrap)
            va = f'<c r="A{r}"{a}' if a else ""
            vb = f'<c r="B{r}"{b}' if b else ""
            vc = f'<c r="C{r}"{c}' if c else ""
            vd = f'<c r="D{r}"{d}' if d else ""
            ve = f'<c r="E{r}"{e}' if e else ""
            vf = f'<c r="F{r}"{f}' if f else ""
            chunk.append(f'<row r="{r}">{va}{vb}{vc}{vd}{ve}{vf}</row>')
            if len(chunk) == _CHUNK_ROWS:
                self._spools[-1].write("".join(chunk).encode())
                chunk.clear()
        self._spools[-1].write("".join(chunk).encode())
        self._sheet_rows[-1] += row - first
        self.rows_written += row - first
        return row - first

    def _excel_serial(self, ts: object) -> float | None:
        """Excel serial (1900 system) of ``ts`` as wall time in the export zone (naive: pymongo's UTC)."""
        if not isinstance(ts, datetime):
            return None
        try:
            local = (ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)).astimezone(self._tz)
        except (OverflowError, ValueError):
            return None
        serial = (local.replace(tzinfo=None) - _EXCEL_EPOCH) / _DAY
        return serial if _EXCEL_1900_03_01 <= serial < _EXCEL_MAX_SERIAL else None

    def _new_sheet(self) -> None:
        # Unnamed once on disk (O_TMPFILE, or unlinked at once): nothing to clean up, and mode 0600.
        self._spools.append(tempfile.SpooledTemporaryFile(SHEET_SPOOL_BYTES, dir=str(self.final_path.parent)))
        self._sheet_rows.append(0)
        self._spools[-1].write(self._template.sheet_head)

    def _finish_sheet(self) -> None:  # the autofilter covers exactly the rows, as openpyxl writes it
        before_ref, after_ref = self._template.sheet_tail
        self._spools[-1].write(before_ref + f'ref="A1:F{self._sheet_rows[-1] + 1}"'.encode() + after_ref)

    def _save(self) -> None:
        template = package_template(len(self._spools))
        ranges = (
            f"$A$1:$F${rows + 1}{text}" for rows, text in zip(self._sheet_rows, template.workbook[1:], strict=True)
        )
        variable = {
            WORKBOOK_PART: (template.workbook[0] + "".join(ranges)).encode(),
            CORE_PART: _core_xml(*self._names),
        }
        with self._file as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in template.order:
                if not name.startswith(SHEET_PREFIX):
                    archive.writestr(name, variable.get(name) or template.fixed[name])
                    continue
                spool = self._spools[int(name[len(SHEET_PREFIX) : -len(".xml")]) - 1]
                size = spool.tell()
                spool.seek(0)
                # zipfile's own rule for a known size: ZIP64 only where needed
                with archive.open(name, "w", force_zip64=size * 1.05 > zipfile.ZIP64_LIMIT) as part:
                    shutil.copyfileobj(spool, part, _STREAM_CHUNK)
                spool.close()
            archive.close()  # the central directory, before the package is made durable
            handle.flush()
            os.fsync(handle.fileno())

    def _cleanup_files(self) -> None:
        with suppress(OSError):
            self._file.close()
        publish.unlink_quietly(self._tmp_path)
