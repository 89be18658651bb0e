"""Assertions helpers shared by the end-to-end tests: reading workbooks and captured mail."""

from __future__ import annotations

import io
import json
from email.message import EmailMessage
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

from openpyxl import load_workbook

from wa_export.localservers import CapturedMessage

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def sheet_rows(source: Path | bytes) -> list[tuple[Any, ...]]:
    """All rows of every sheet after the header, in order."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    workbook = load_workbook(handle)
    rows: list[tuple[Any, ...]] = []
    for sheet in workbook.worksheets:
        rows.extend(tuple(cell.value for cell in row) for row in sheet.iter_rows(min_row=2))
    return rows


def attachments(message: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(filename, content type, payload) of each attachment."""
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((part.get_filename() or "", part.get_content_type(), payload))
    return found


def mailed_rows(captured: CapturedMessage) -> list[tuple[Any, ...]]:
    parts = attachments(captured.message())
    assert len(parts) == 1, f"expected one attachment, got {[name for name, _, _ in parts]}"
    return sheet_rows(parts[0][2])


def mailed_contents(captured_messages: list[CapturedMessage]) -> list[str]:
    """Message Content column of every row of every mailed workbook."""
    return [row[2] for captured in captured_messages for row in mailed_rows(captured)]


def plain_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "no text/plain part"
    return part.get_content()


def parse_json(result: CompletedProcess[str]) -> dict[str, Any]:
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"stdout is not one JSON document: {error}\n{result.stdout}\n{result.stderr}") from None
    assert isinstance(document, dict)
    return document


def xlsx_files(export_dir: Path) -> list[Path]:
    return sorted(export_dir.rglob("*.xlsx")) if export_dir.exists() else []
