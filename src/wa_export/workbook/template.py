"""Workbooks from a template: the same file as `WorkbookWriter`, without rebuilding its fixed parts.

A scheduled run writes one small workbook per workspace with new messages; most
of a small workbook's cost is what never changes: openpyxl's workbook object
and styles, the sheet's views and columns, the styles, theme and manifest, and
compressing all of them (about 10 ms of CPU per file, bench/RESULTS.md). Here
openpyxl writes one real workbook per process (and sheet count) through
`WorkbookWriter`; its package is split into the parts that never change (kept
compressed) and the few that do (the sheet rows, the autofilter range, the
document properties and the creation time, filled into openpyxl's own XML).
`TemplateWorkbookWriter` then writes every later workbook from those parts: the
rows with `WorkbookWriter`'s own row formatting (kept in memory while the sheet
is small), the file under the same hidden temporary name, published the same
way. A test checks that both writers produce the same package, part for part.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from zoneinfo import ZoneInfo

from openpyxl.packaging.core import DocumentProperties
from openpyxl.xml.functions import tostring

from wa_export.workbook.layout import property_values, zone_name
from wa_export.workbook.publish import create_private_file
from wa_export.workbook.writer import MAX_DATA_ROWS_PER_SHEET, WorkbookWriter

SHEET_PREFIX = "xl/worksheets/sheet"
WORKBOOK_PART = "xl/workbook.xml"
CORE_PART = "docProps/core.xml"
_PROBE_ROW = ("+10000000000", "+20000000000", "probe", datetime(2020, 1, 1, tzinfo=UTC), "received", "probe")
_PROBE_FILTER = "$A$1:$F$2"
_PROBE_REF = 'ref="A1:F2"'
_CORE_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
CORE_FIELDS = ("title", "creator", "lastModifiedBy", "subject", "description")  # layout.property_values
_PLACEHOLDER_TIME = datetime(2001, 2, 3, 4, 5, 6)
# A sheet's XML stays in memory up to this size (a scheduled run's small workbooks never touch
# the disk twice), then goes on in a private temporary file next to the workbook.
SHEET_SPOOL_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class _Part:
    """One zip member, compressed once."""

    name: bytes
    crc: int
    size: int
    data: bytes  # raw deflate stream


_COMPRESSION_LEVEL = 6  # zipfile's default, so every part compresses as openpyxl's own package does
_DEFLATE_LOOKAHEAD = 262  # zlib's MIN_LOOKAHEAD: the window must hold the data plus this


def _deflate(name: str, content: bytes) -> _Part:
    bits = _window_bits(len(content))
    # zlib's default memory level, 8, goes with its default 15-bit window: scaled down with it.
    compressor = zlib.compressobj(_COMPRESSION_LEVEL, zlib.DEFLATED, -bits, bits - 7)
    data = compressor.compress(content) + compressor.flush()
    return _Part(name.encode(), zlib.crc32(content), len(content), data)


def _window_bits(size: int) -> int:
    """The smallest deflate window that holds `size` bytes (zlib's default, 15, for anything larger).

    A small part (a few-row sheet, core.xml) compresses exactly as well, and zlib then
    allocates a few kilobytes instead of ~260 KB per part: a scheduled run deflates three
    small parts per workbook."""
    return max(9, min(15, (size + _DEFLATE_LOOKAHEAD - 1).bit_length()))


@dataclass(frozen=True)
class PackageTemplate:
    """A workbook of `sheets` sheets, split into its fixed parts and the patterns of the others."""

    sheets: int
    order: tuple[str, ...]  # member names in openpyxl's order
    fixed: dict[str, _Part]
    sheet_head: bytes  # up to and including the header row, inside <sheetData>
    sheet_tail: tuple[bytes, bytes]  # around the autofilter range, after the last row
    workbook: tuple[str, ...]  # workbook.xml split at each sheet's filter range
    core: str  # core.xml with a placeholder per property (CORE_FIELDS) and for the time
    date_style: str
    styles: tuple[str, str, str]  # the ' s="N"' of date, wrapped-text and other data cells


_templates: dict[int, PackageTemplate] = {}
_lock = threading.Lock()


def package_template(sheets: int) -> PackageTemplate:
    """The template for workbooks of `sheets` sheets, made by openpyxl once per process."""
    with _lock:
        template = _templates.get(sheets)
        if template is None:
            template = _templates[sheets] = _capture(sheets)
        return template


def _capture(sheets: int) -> PackageTemplate:
    with tempfile.TemporaryDirectory(prefix="wa-export-template-") as tmp:
        path = Path(tmp) / "template.xlsx"
        # One probe row per sheet: every sheet's XML, and the date style, are as in a real export.
        with WorkbookWriter(path, ZoneInfo("UTC"), rows_per_sheet=1) as writer:
            writer.append_many([_PROBE_ROW] * sheets)
            styles = writer._data_styles()  # the cell styles openpyxl registered: the same ids in every copy
            writer.commit()
        with zipfile.ZipFile(path) as archive:
            members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    names = tuple(name for name, _ in members)
    contents = dict(members)
    first_sheet = contents[f"{SHEET_PREFIX}1.xml"]
    head, _, rest = first_sheet.partition(b'<row r="2"')
    tail = rest[rest.index(b"</sheetData>"):]
    before_ref, _, after_ref = tail.partition(_PROBE_REF.encode())
    marker = b' s="'
    date_cell = rest[rest.index(b'<c r="D2"'):]
    date_style = date_cell[date_cell.index(marker) + len(marker):].split(b'"', 1)[0].decode()
    for number in range(1, sheets + 1):  # every sheet is the same apart from its rows
        sheet = contents[f"{SHEET_PREFIX}{number}.xml"]
        if not (sheet.startswith(head) and sheet.endswith(tail)):
            raise RuntimeError("openpyxl wrote sheets that differ beyond their rows; the template cannot be used")
    workbook = tuple(contents[WORKBOOK_PART].decode().split(_PROBE_FILTER))
    variable = {WORKBOOK_PART, CORE_PART}
    fixed = {
        name: _deflate(name, content)
        for name, content in members
        if name not in variable and not name.startswith(SHEET_PREFIX)
    }
    if len(workbook) != sheets + 1:
        raise RuntimeError("the workbook part does not name one filter range per sheet")
    return PackageTemplate(sheets, names, fixed, head, (before_ref, after_ref), workbook, _core_template(),
                           date_style, styles)


def _core_template() -> str:
    """core.xml as openpyxl writes it, with placeholders where each workbook's properties and time go."""
    properties = DocumentProperties()
    for attribute in CORE_FIELDS:
        setattr(properties, attribute, _placeholder(attribute))
    properties.created = properties.modified = _PLACEHOLDER_TIME
    core: str = tostring(properties.to_tree()).decode("utf-8")
    stamp = _PLACEHOLDER_TIME.strftime(_CORE_TIME_FORMAT)
    if core.count(stamp) != 2 or any(core.count(_placeholder(attribute)) != 1 for attribute in CORE_FIELDS):
        raise RuntimeError("openpyxl wrote the document properties differently; the template cannot be used")
    return core.replace(stamp, _placeholder("time"))


def _placeholder(name: str) -> str:
    return f"WAEXPORTPLACEHOLDER{name}END"


def core_part(template: PackageTemplate, properties: dict[str, str], created: datetime) -> bytes:
    """This workbook's core.xml: its properties XML-escaped as lxml escapes text, its creation time."""
    core = template.core.replace(_placeholder("time"), created.strftime(_CORE_TIME_FORMAT))
    for attribute in CORE_FIELDS:
        core = core.replace(_placeholder(attribute), xml_escape(properties[attribute]))
    return core.encode("utf-8")


# --------------------------------------------------------------------------- the zip


def _dos_time(moment: time.struct_time) -> tuple[int, int]:
    dos_time = (moment.tm_hour << 11) | (moment.tm_min << 5) | (moment.tm_sec // 2)
    dos_date = ((moment.tm_year - 1980) << 9) | (moment.tm_mon << 5) | moment.tm_mday
    return dos_time, dos_date


@dataclass(frozen=True)
class _OnDisk:
    """A part too big to hold in memory: compressed from its file while the package is written."""

    name: bytes
    path: Path


_LOCAL_HEADER = "<IHHHHHIIIHH"
_CRC_OFFSET = 14  # of crc, compressed size, size in a local file header
_STREAM_CHUNK = 1024 * 1024


def _stream_part(handle: Any, part: _OnDisk) -> tuple[int, int, int]:
    """Deflate `part`'s file into `handle` a chunk at a time; (crc, compressed size, size)."""
    compressor = zlib.compressobj(_COMPRESSION_LEVEL, zlib.DEFLATED, -15)
    crc = size = compressed = 0
    with open(part.path, "rb") as source:
        while chunk := source.read(_STREAM_CHUNK):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            data = compressor.compress(chunk)
            compressed += len(data)
            handle.write(data)
    data = compressor.flush()
    compressed += len(data)
    handle.write(data)
    return crc, compressed, size


def write_package(handle: Any, parts: list[_Part | _OnDisk]) -> None:
    """A zip of deflated parts (method 8), as zipfile would write it, to a seekable binary file.

    A part on disk is compressed as it is copied (memory stays flat at any size);
    its header's sizes and crc are filled in afterwards.
    """
    dos_time, dos_date = _dos_time(time.localtime())

    def local_header(name: bytes, crc: int, compressed: int, size: int) -> bytes:
        return struct.pack(_LOCAL_HEADER, 0x04034B50, 20, 0, 8, dos_time, dos_date, crc, compressed, size,
                           len(name), 0) + name

    directory = []
    offset = 0
    for part in parts:
        if isinstance(part, _Part):
            crc, compressed, size = part.crc, len(part.data), part.size
            header = local_header(part.name, crc, compressed, size)
            handle.write(header)
            handle.write(part.data)
        else:
            header = local_header(part.name, 0, 0, 0)  # sizes and crc are known once it is written
            handle.write(header)
            crc, compressed, size = _stream_part(handle, part)
            end = handle.tell()
            handle.seek(offset + _CRC_OFFSET)
            handle.write(struct.pack("<III", crc, compressed, size))
            handle.seek(end)
        directory.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, dos_time, dos_date, crc,
                                     compressed, size, len(part.name), 0, 0, 0, 0, 0o600 << 16, offset)
                         + part.name)
        offset += len(header) + compressed
    central = b"".join(directory)
    handle.write(central)
    handle.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(parts), len(parts), len(central), offset, 0))


# --------------------------------------------------------------------------- the writer


class _SheetSpool:
    """A sheet's XML: in memory while small, in a private temporary file (0600) once it grows.

    The file's path goes into `paths` (the writer's cleanup list) when it is created.
    """

    def __init__(self, path: Path, paths: list[str]) -> None:
        self.path = path
        self._paths = paths
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._file: Any = None

    def write(self, data: bytes) -> int:
        if self._buffer is not None:
            if self._buffer.tell() + len(data) <= SHEET_SPOOL_BYTES:
                return self._buffer.write(data)
            self._paths.append(str(self.path))
            self._file = os.fdopen(create_private_file(self.path), "wb")
            self._file.write(self._buffer.getvalue())
            self._buffer = None
        return int(self._file.write(data))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def part(self, name: str) -> _Part | _OnDisk:
        """The sheet as a package part: compressed now while small, from its file while the package is written."""
        if self._buffer is not None:
            return _deflate(name, self._buffer.getvalue())
        return _OnDisk(name.encode(), self.path)


class _NoStream:
    """Stands in for openpyxl's XML stream: the rows are written straight to the sheet file."""

    def flush(self) -> None:
        return None


class TemplateWorkbookWriter(WorkbookWriter):
    """`WorkbookWriter` without openpyxl per file: same rows, same package, a fraction of the CPU.

    Only the sheet files and the package are written differently; rows, the
    temporary name, publishing and cleanup are `WorkbookWriter`'s.
    """

    def __init__(
        self,
        final_path: Path | str,
        timezone: Any,
        *,
        rows_per_sheet: int = MAX_DATA_ROWS_PER_SHEET,
        workspace_name: str | None = None,
        timezone_name: str | None = None,
    ) -> None:
        # WorkbookWriter.__init__ minus openpyxl's workbook object: the state its methods use.
        # The properties (title, zone) are the one fixed-looking part that differs per workbook.
        self._properties = property_values(workspace_name, timezone_name or zone_name(timezone))
        template = package_template(1)
        self._head = template.sheet_head
        self._tail = template.sheet_tail
        self._date_style_id = template.date_style
        self._template_styles = template.styles
        self._sheets: list[Any] = []
        self._sheet_files: list[Any] = []
        self._sheet_rows: list[int] = []
        self._handle: Any = None
        self._xf = _NoStream()
        self._sheet_row = 0
        self._open_temporary(final_path, timezone, rows_per_sheet)
        try:
            self._new_sheet()
        except BaseException:
            self._cleanup_files()
            raise

    # The hooks WorkbookWriter calls ---------------------------------------------------

    def _new_sheet(self) -> None:
        index = len(self._sheet_files) + 1
        sheet_tmp = self._directory / f"{self._sheet_tmp_prefix}{index}.tmp"
        handle = _SheetSpool(sheet_tmp, self._sheet_tmp_paths)
        self._sheet_files.append(handle)
        self._sheet_rows.append(0)
        self._handle = handle
        self._sheet_row = 0
        handle.write(self._head)

    def _date_style(self) -> str:
        return self._date_style_id

    def _data_styles(self) -> tuple[str, str, str]:
        return self._template_styles

    def _finish_sheet(self) -> None:
        """The rows are done: the autofilter covers exactly them, as openpyxl writes it."""
        if self._handle is None:
            return
        before_ref, after_ref = self._tail
        self._handle.write(before_ref + f'ref="A1:F{self._sheet_row + 1}"'.encode() + after_ref)
        self._sheet_rows[-1] = self._sheet_row
        self._handle.close()
        self._handle = None

    def _save(self) -> None:
        assert self._fd is not None
        template = package_template(len(self._sheet_files))
        ranges = [f"$A$1:$F${rows + 1}" for rows in self._sheet_rows]
        workbook = template.workbook[0] + "".join(r + text for r, text in zip(ranges, template.workbook[1:], strict=True))
        variable = {
            WORKBOOK_PART: workbook.encode(),
            CORE_PART: core_part(template, self._properties, datetime.now(UTC)),
        }
        parts: list[_Part | _OnDisk] = []
        for name in template.order:
            if name in template.fixed:
                parts.append(template.fixed[name])
            elif name.startswith(SHEET_PREFIX):
                number = int(name[len(SHEET_PREFIX):-len(".xml")])
                parts.append(self._sheet_files[number - 1].part(name))
            else:
                parts.append(_deflate(name, variable[name]))
        with os.fdopen(self._fd, "w+b", closefd=True) as handle:
            self._fd = None
            write_package(handle, parts)
            handle.flush()
            os.fsync(handle.fileno())

    def abort(self) -> None:
        for handle in self._sheet_files:
            try:
                handle.close()
            except OSError:
                pass
        super().abort()


__all__ = ["PackageTemplate", "TemplateWorkbookWriter", "package_template", "write_package"]
