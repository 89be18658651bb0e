"""Output primitives for the CLI: rich on a terminal, plain log lines otherwise, or one JSON document.

Part of the CLI layer; the per-command views (`*_view.py`) use these. Personal data
(phone numbers, message text) never appears here: only counts, workspace names and
ids, file paths, recipients.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # cli/app.py imports this module at start-up; settings imports pymongo
    from wa_export.settings import Settings

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

    def table(self, table: Table, keep_whole: Iterable[str] = ()) -> None:
        """A rich table on a terminal, plain lines otherwise.

        ``keep_whole``: ids and paths the table must never split or cut. On a
        terminal too narrow to show each of them whole, the table is printed as
        plain lines instead, which the terminal wraps without breaking a word.
        """
        if self.interactive and self.fits(table, keep_whole):
            self.console.print(table)
            return
        # Not a terminal, or a table the terminal cannot show: plain lines.
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

    def fits(self, table: Table, keep_whole: Iterable[str]) -> bool:
        """True if the table fits this terminal and shows every string of ``keep_whole`` unbroken.

        Checked on the rendered text rather than predicted from column widths:
        rich folds or cuts a cell wherever its column ends up too narrow.
        """
        width = self.console.width
        buffer = io.StringIO()
        # Rendered as self.console renders it (soft_wrap: lines are never cropped).
        Console(file=buffer, width=width, no_color=True, highlight=False, soft_wrap=True).print(table)
        rendered = buffer.getvalue()
        # Columns with a minimum width can make rich draw a table wider than the
        # terminal, which would then wrap every line of it.
        if any(cell_len(line) > width for line in rendered.splitlines()):
            return False
        return all(word in rendered for word in keep_whole if word)

    def error(self, message: str, code: int) -> None:
        if self.json_output:
            self.json({"ok": False, "exit_code": code, "error": message})
        self.stderr(message)

    def stderr(self, message: str) -> None:
        """One `wa-export: …` line on stderr (stdout, and so a --json document, stays untouched)."""
        print(f"wa-export: {message}", file=sys.stderr, flush=True)

    # --- export -----------------------------------------------------------------


def display_path(path: str | os.PathLike[str] | None, export_dir: Path | None) -> str:
    """``path`` relative to EXPORT_DIR, as tables and log lines show it; in full when outside it (or no dir)."""
    if not path:
        return ""
    if export_dir is not None:
        try:
            return str(Path(path).relative_to(export_dir))
        except ValueError:
            pass
    return str(path)


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

