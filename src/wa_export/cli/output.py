"""Output for the CLI views: rich on a terminal, plain log lines otherwise, or one JSON document.

No personal data (phone numbers, message text) ever reaches it: counts, names, ids, paths, recipients.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from wa_export.clock import MINUTE_FORMAT
from wa_export.units import LOG_STAMP, local_time

if TYPE_CHECKING:  # cli/app.py imports this module at start-up; settings imports pymongo
    from wa_export.settings import Settings

OUTCOME_STYLE = {
    "completed": "green",
    "written": "green",
    "dry_run": "cyan",
    "no_messages": "dim",
    "not_due": "dim",
    "skipped": "yellow",
    "failed": "bold red",
}

# A MongoDB ObjectId as text: a workspace's or an entry's id.
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
# Punctuation a sentence puts around a word, not part of the id, path or variable name.
SENTENCE_PUNCTUATION = ".,;:!?()[]'\"`"

# Tables printed when stdout is not a terminal are never wrapped: a row is one line.
PLAIN_TABLE_WIDTH = 10_000
Row = TypeVar("Row")


def _json_default(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _render(table: Table, width: int, **options: Any) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=width, no_color=True, highlight=False, **options).print(table)
    return buffer.getvalue()


class Output:
    def __init__(self, json_output: bool) -> None:
        self.json_output = json_output
        # The zone of log line stamps: EXPORT_TIMEZONE once the settings are read (the times in the lines use it too).
        self.zone: tzinfo = UTC
        self.console = Console(highlight=False, soft_wrap=True)
        self.interactive = sys.stdout.isatty() and not json_output

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text, markup=False)
        else:
            print(text, flush=True)

    def log(self, level: str, text: str) -> None:
        self.line(f"{local_time(datetime.now(UTC), self.zone, LOG_STAMP)} {level} {text}")

    def summary(self, text: str, failed: object) -> None:
        self.log("ERROR" if failed else "INFO", text)

    def json(self, document: Any) -> None:
        print(json.dumps(document, default=_json_default, ensure_ascii=False, indent=2), flush=True)

    def table(self, table: Table, keep_whole: Iterable[str] = ()) -> None:
        """A rich table on a terminal, plain lines otherwise or when the ids and paths of ``keep_whole`` would break."""
        if self.interactive and self.fits(table, keep_whole):
            self.console.print(table)
            return
        # The title, then the header and one greppable line per row: no box, no wrapping.
        title = table.title
        if title:
            self.line(Text.from_markup(title).plain if isinstance(title, str) else str(title))
        table.title = None
        table.box = None
        table.show_edge = table.show_lines = table.pad_edge = False
        for column in table.columns:
            column.no_wrap = True  # PLAIN_TABLE_WIDTH leaves room for every cell
        for row in _render(table, PLAIN_TABLE_WIDTH).splitlines():
            if row.strip():
                self.line(row.rstrip())

    def fits(self, table: Table, keep_whole: Iterable[str]) -> bool:
        """True if the table fits this terminal and shows every string of ``keep_whole`` unbroken.

        A string listed twice (shown in two cells) must show whole twice: one whole copy elsewhere in the
        table, say a workspace id under a name, does not excuse a copy split in a message.
        """
        width = self.console.width
        rendered = _render(table, width, soft_wrap=True)  # as self.console renders it: never cropped
        # Columns with a minimum width can make rich draw a table wider than the terminal.
        if any(cell_len(line) > width for line in rendered.splitlines()):
            return False
        return all(rendered.count(word) >= shown for word, shown in Counter(keep_whole).items() if word)

    def error(self, message: str, code: int) -> None:
        if self.json_output:
            self.json({"ok": False, "exit_code": code, "error": message})
        self.stderr(message)

    def stderr(self, message: str) -> None:
        print(f"wa-export: {message}", file=sys.stderr, flush=True)


def unbreakable_words(text: str | None) -> list[str]:
    """The words of a message a table must not split: ids, paths and variable names (``WORKSPACE_…_EMAIL``)."""
    words = (word.strip(SENTENCE_PUNCTUATION) for word in (text or "").split())
    return [word for word in words if "/" in word or "_" in word or OBJECT_ID.fullmatch(word)]


def column_table(rows: Iterable[Row], columns: Sequence[tuple[Column, Callable[[Row], str]]], **options: Any) -> Table:
    """A table from (column, cell of a row) pairs: a new column is one more pair."""
    table = Table(*(column for column, _ in columns), **options)
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def styled(text: str, style: str) -> str:
    """``text`` (already escaped) as rich markup in ``style``; unchanged when there is none."""
    return f"[{style}]{text}[/{style}]" if style else text


def outcome_cell(outcome: str) -> str:
    return styled(escape(outcome), OUTCOME_STYLE.get(outcome, ""))


def workspace_cell(name: str | None, workspace_id: str, separator: str = "\n") -> str:
    """The workspace's name, then its id dimmed (under it by default)."""
    return f"{escape(name or '') or '(unnamed)'}{separator}[dim]{escape(workspace_id)}[/dim]"


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


def short_time(moment: datetime | None, settings: Settings) -> str:
    """'11-25 22:08' this year (short enough for an 80-column table), '2025-11-25 22:08' before."""
    if moment is None:
        return ""
    this_year = moment.astimezone(settings.export_timezone).year == datetime.now(settings.export_timezone).year
    return local_time(moment, settings, "%m-%d %H:%M" if this_year else MINUTE_FORMAT)
