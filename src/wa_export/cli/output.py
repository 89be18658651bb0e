"""Output primitives for the CLI: rich on a terminal, plain log lines otherwise, or one JSON document.

Part of the CLI layer; the per-command views (`*_view.py`) use these. Personal data
(phone numbers, message text) never appears here: only counts, workspace names and
ids, file paths, recipients.
"""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from wa_export.settings import Settings

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    pass

OUTCOME_STYLE = {
    "completed": "green",
    "written": "green",
    "dry_run": "cyan",
    "no_messages": "dim",
    "skipped": "yellow",
    "failed": "bold red",
}


# Tables printed when stdout is not a terminal are never wrapped: a row is one line.
PLAIN_TABLE_WIDTH = 10_000

def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Output:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        self.console = Console(highlight=False, soft_wrap=True)
        self.error_console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.interactive = sys.stdout.isatty() and not json_output

    # --- primitives -------------------------------------------------------------

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text, markup=False)
        else:
            print(text, flush=True)

    def json(self, document: Any) -> None:
        print(json.dumps(document, default=_json_default, ensure_ascii=False, indent=2), flush=True)

    def table(self, table: Table) -> None:
        if self.interactive:
            self.console.print(table)
            return
        # Not a terminal (cron, a pipe): plain lines. The title is a line of
        # its own, then the header and one line per row: no box characters, no
        # wrapping (a row is one greppable line), no padding to a terminal width.
        title = table.title
        if title:
            self.line(Text.from_markup(title).plain if isinstance(title, str) else str(title))
        table.title = None
        table.box = None
        table.show_edge = False
        table.show_lines = False
        table.pad_edge = False
        for column in table.columns:
            column.no_wrap = True  # and PLAIN_TABLE_WIDTH leaves room for every cell
        buffer = io.StringIO()
        Console(file=buffer, width=PLAIN_TABLE_WIDTH, no_color=True, highlight=False).print(table)
        for row in buffer.getvalue().splitlines():
            if row.strip():
                self.line(row.rstrip())

    def error(self, message: str, code: int) -> None:
        if self.json_output:
            self.json({"ok": False, "exit_code": code, "error": message})
        self.stderr(message)

    def stderr(self, message: str) -> None:
        """One `wa-export: …` line on stderr (stdout, and so a --json document, stays untouched)."""
        print(f"wa-export: {message}", file=sys.stderr, flush=True)

    # --- export -----------------------------------------------------------------


def local_time(moment: datetime | None, settings: Settings, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return "" if moment is None else moment.astimezone(settings.export_timezone).strftime(fmt)


def short_time(moment: datetime | None, settings: Settings) -> str:
    """'11-25 22:08' this year (short enough for an 80-column table), '2025-11-25 22:08' before."""
    if moment is None:
        return ""
    local = moment.astimezone(settings.export_timezone)
    if local.year == datetime.now(settings.export_timezone).year:
        return local.strftime("%m-%d %H:%M")
    return local.strftime("%Y-%m-%d %H:%M")

