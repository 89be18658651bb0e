"""What a business reader sees besides the rows: column widths, alignment, print layout, properties."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import timezone as dt_timezone
from typing import Any
from zoneinfo import ZoneInfo

from openpyxl.styles import Alignment
from openpyxl.worksheet.properties import PageSetupProperties

from wa_export.workbook.cells import cell_text

TITLE_PREFIX = "WhatsApp messages"
CREATOR = "wa-export"
# Data cells are top-aligned so a tall (wrapped) row still reads left to right;
# only Message Content wraps.
TOP = Alignment(vertical="top")
WRAPPED = Alignment(vertical="top", wrap_text=True)

# Excel widths count characters of the default font; a bold header is wider and
# the filter drop-down covers about the last three characters of its cell.
_BOLD_FACTOR = 1.1
_FILTER_BUTTON_ROOM = 3
_PROPERTY_MAX_LENGTH = 255  # shown on one line of Excel's File > Info


def column_widths(letters: str, header: Sequence[str], minimums: Sequence[int]) -> dict[str, int]:
    """Each column as wide as its values need (``minimums``), and never narrower than its header cell."""
    return {
        letter: max(minimum, math.ceil(len(title) * _BOLD_FACTOR) + _FILTER_BUTTON_ROOM)
        for letter, title, minimum in zip(letters, header, minimums, strict=True)
    }


def print_layout(sheet: Any) -> None:
    """Printed as it reads on screen: landscape, every column within one page's width (as many pages
    down as the rows need), the header row repeated at the top of every page."""
    sheet.page_setup.orientation = "landscape"
    sheet.page_setup.fitToWidth = 1
    sheet.page_setup.fitToHeight = 0
    sheet.sheet_properties.pageSetUpPr = PageSetupProperties(fitToPage=True)
    sheet.print_title_rows = "1:1"


def zone_name(zone: ZoneInfo | dt_timezone) -> str:
    """``Asia/Kolkata`` for a ZoneInfo, ``UTC+05:30`` for a fixed offset."""
    if isinstance(zone, ZoneInfo):
        return zone.key
    return zone.tzname(None) or str(zone)


def _one_line(text: object) -> str:
    """Tenant-controlled text for a document property: XML-safe, one line, bounded."""
    return " ".join(cell_text(text).split())[:_PROPERTY_MAX_LENGTH]


def property_values(workspace_name: str | None, zone: str) -> dict[str, str]:
    """What Excel shows under File > Info, by openpyxl's attribute name: title, author, the Timestamp zone."""
    name = _one_line(workspace_name) if workspace_name is not None else ""
    zone = _one_line(zone)
    return {
        "title": f"{TITLE_PREFIX} – {name}" if name else TITLE_PREFIX,
        "creator": CREATOR,
        "lastModifiedBy": CREATOR,
        "subject": f"Timestamps in {zone}",
        "description": (
            f"{TITLE_PREFIX}{f' of workspace {name}' if name else ''}, exported by {CREATOR}. "
            f"The Timestamp column shows each message's time in {zone}."
        ),
    }
