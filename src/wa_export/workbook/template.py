"""Workbooks from a template: the same file as `WorkbookWriter`, without openpyxl per file.

Most of a small workbook's cost is openpyxl's fixed work (workbook object, styles, views,
manifest; ~18 ms of a scheduled run's ~32 ms per workspace in bench/RESULTS.md). So openpyxl
writes one real workbook per process (and sheet count); every later one is that package with
its own rows (`WorkbookWriter`'s row formatting), autofilter ranges, document properties and
creation time filled into openpyxl's XML. A test checks both writers write the same parts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zipfile
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape as xml_escape
from zoneinfo import ZoneInfo

from openpyxl.packaging.core import DocumentProperties
from openpyxl.xml.functions import tostring

from wa_export.workbook.layout import property_values, zone_name
from wa_export.workbook.writer import MAX_DATA_ROWS_PER_SHEET, WorkbookWriter

SHEET_PREFIX = "xl/worksheets/sheet"
WORKBOOK_PART = "xl/workbook.xml"
CORE_PART = "docProps/core.xml"
_PROBE_ROW = ("+10000000000", "+20000000000", "probe", datetime(2020, 1, 1, tzinfo=UTC), "received", "probe")
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
            template = _templates[sheets] = _capture(sheets)
        return template


def _capture(sheets: int) -> PackageTemplate:
    with tempfile.TemporaryDirectory(prefix="wa-export-template-") as tmp:
        path = Path(tmp) / "template.xlsx"
        # One probe row per sheet: every sheet's XML is as in a real export.
        with WorkbookWriter(path, ZoneInfo("UTC"), rows_per_sheet=1) as writer:
            writer.append_many([_PROBE_ROW] * sheets)
            styles = writer._data_styles()  # the cell styles openpyxl registered: the same ids in every copy
            writer.commit()
        with zipfile.ZipFile(path) as archive:
            contents = {name: archive.read(name) for name in archive.namelist()}
    head, _, rest = contents[f"{SHEET_PREFIX}1.xml"].partition(b'<row r="2"')
    tail = rest[rest.index(b"</sheetData>") :]
    for number in range(1, sheets + 1):  # every sheet is the same apart from its rows
        sheet = contents[f"{SHEET_PREFIX}{number}.xml"]
        if not (sheet.startswith(head) and sheet.endswith(tail)):
            raise RuntimeError("openpyxl wrote sheets that differ beyond their rows; the template cannot be used")
    workbook = tuple(contents[WORKBOOK_PART].decode().split(_PROBE_FILTER))
    if len(workbook) != sheets + 1:
        raise RuntimeError("the workbook part does not name one filter range per sheet")
    before_ref, _, after_ref = tail.partition(_PROBE_REF)
    variable = (WORKBOOK_PART, CORE_PART, SHEET_PREFIX)
    fixed = {name: content for name, content in contents.items() if not name.startswith(variable)}
    return PackageTemplate(tuple(contents), fixed, head, (before_ref, after_ref), workbook, _core_template(), styles)


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


class TemplateWorkbookWriter(WorkbookWriter):
    """`WorkbookWriter` without openpyxl per file: only the sheet files and the package are written differently."""

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
        self._properties = property_values(workspace_name, timezone_name or zone_name(timezone))
        template = package_template(1)
        self._head, self._tail, self._template_styles = template.sheet_head, template.sheet_tail, template.styles
        self._spools: list[tempfile.SpooledTemporaryFile[bytes]] = []
        self._sheet_rows: list[int] = []  # data rows of each finished sheet
        self._open_temporary(final_path, timezone, rows_per_sheet)
        try:
            self._new_sheet()
        except BaseException:
            self._cleanup_files()
            raise

    # The hooks WorkbookWriter calls ---------------------------------------------------

    def _new_sheet(self) -> None:
        # Unnamed once on disk (O_TMPFILE, or unlinked at once): nothing to clean up, and mode 0600.
        spool = tempfile.SpooledTemporaryFile(SHEET_SPOOL_BYTES, dir=str(self._directory))
        self._spools.append(spool)
        self._handle = self._xf = spool  # no lxml stream to flush before the rows: only the spool
        self._sheet_row = 0
        spool.write(self._head)

    def _data_styles(self) -> tuple[str, str, str]:
        return self._template_styles

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
        with os.fdopen(self._fd, "w+b") as handle:
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

    def abort(self) -> None:
        for spool in self._spools:
            with suppress(OSError):  # a full disk may fail the flush: the file goes anyway
                spool.close()
        super().abort()
