"""Cell text for untrusted message content: inline strings (never a formula), valid XML, within Excel's limits."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import date

from wa_export.units import count_noun

CELL_TEXT_LIMIT = 32_767  # Excel's limit, counted in UTF-16 code units
TRUNCATION_MARKER = "… [truncated by wa-export: {omitted} characters omitted]"
# XML 1.0 forbids these (\t \n \r stay); surrogates left in a str are unpaired (pairs are joined first).
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
# Excel decodes _xHHHH_ inside cell text; escaping the "_" keeps it literal, as XlsxWriter does.
_EXCEL_ESCAPE_RE = re.compile("_(x[0-9A-Fa-f]{4}_)")
TAILS_KEPT = 20_000  # distinct values text_cell_tails remembers (a few MB), so memory stays flat
_SAFE_LEN = CELL_TEXT_LIMIT // 2  # fits even if every character takes two UTF-16 code units


def cell_text(value: object) -> str:
    """Any BSON value as readable, XML-safe text (see `_to_text`), over ``CELL_TEXT_LIMIT`` truncated visibly."""
    if value is None:
        return ""
    text = value if type(value) is str else _to_text(value)
    if len(text) <= _SAFE_LEN and "_x" not in text and (text.isprintable() or _ILLEGAL_XML_RE.search(text) is None):
        return text  # the overwhelmingly common message needs no change at all
    if _SURROGATE_RE.search(text) is not None:
        # Join surrogate pairs into the real character; drop the unpaired rest, which no XML file can hold.
        text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "ignore")
    text = _EXCEL_ESCAPE_RE.sub(r"_x005F_\1", _ILLEGAL_XML_RE.sub("", text))
    if len(text) <= _SAFE_LEN or _prefix_len(text, CELL_TEXT_LIMIT) == len(text):
        return text
    # The marker's length depends on the number it shows; a few passes settle it.
    end = CELL_TEXT_LIMIT
    for _ in range(3):
        end = CELL_TEXT_LIMIT - len(TRUNCATION_MARKER.format(omitted=len(text) - _prefix_len(text, end)))
    end = _prefix_len(text, end)
    return text[:end] + TRUNCATION_MARKER.format(omitted=len(text) - end)


def _prefix_len(text: str, units: int) -> int:
    """Number of characters of ``text`` that fit into ``units`` UTF-16 code units (emoji count twice)."""
    return len(text.encode("utf-16-le")[: 2 * units].decode("utf-16-le", "ignore"))  # a split pair is dropped


def _to_text(value: object) -> str:
    """ISO 8601 dates, ObjectId hex, ``<binary N bytes>`` (UUIDs as such), relaxed Extended JSON, else ``str()``."""
    from bson import UUID_SUBTYPE, Binary, UuidRepresentation, json_util  # lazily: cell_text stays cheap to import

    try:
        if isinstance(value, str):
            return str.__str__(value)
        if isinstance(value, date):  # datetime included
            return value.isoformat()
        if isinstance(value, Binary) and value.subtype == UUID_SUBTYPE:
            return str(value.as_uuid(UuidRepresentation.STANDARD))
        if isinstance(value, (bytes, bytearray, memoryview)):
            return f"<binary {count_noun(len(bytes(value)), 'byte')}>"
        if isinstance(value, (dict, list, tuple)):  # ensure_ascii=False keeps emoji and non-Latin text readable
            options = json_util.RELAXED_JSON_OPTIONS
            return json_util.dumps(value, json_options=options, ensure_ascii=False, separators=(",", ":"))
        return str(value)  # ObjectId included: its hex
    except Exception:  # a hostile __str__ must not fail the export
        return f"<{type(value).__name__}>"


def text_cell_tail(value: str, style: str) -> str:
    """What follows ``<c r="A2"`` in an inline-string cell's XML (``style``: ``' s="N"'``); "" (blank) for ""."""
    if not value:
        return ""
    # Leading/trailing white space (the only characters <= " " left) is kept by Excel only with xml:space.
    space = ' xml:space="preserve"' if value[0] <= " " or value[-1] <= " " else ""
    if "&" in value or "<" in value or ">" in value or "\r" in value:
        # What lxml does for text: CR as a reference, or XML parsers turn it into LF.
        value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return f'{style} t="inlineStr"><is><t{space}>{value}</t></is></c>'


def text_cell_tails(style: str) -> Callable[[str], str]:
    """`text_cell_tail` of `cell_text`, remembered for values (phones, Status, Workspace ID) repeating row after row."""
    return functools.lru_cache(TAILS_KEPT)(lambda value: text_cell_tail(cell_text(value), style))
