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
from wa_export.errors import ExitCode
from wa_export.units import LOG_STAMP, local_time

if TYPE_CHECKING:  # cli/app.py imports this module at start-up; settings imports pymongo
    from wa_export.settings import Settings

OUTCOME_STYLE = {"completed": "green", "written": "green", "dry_run": "cyan", "skipped": "yellow", "failed": "bold red"}
OUTCOME_STYLE |= dict.fromkeys(("no_messages", "not_due"), "dim")
OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")  # a workspace's or an entry's id
SENTENCE_PUNCTUATION = ".,;:!?()[]'\"`"  # around a word in a sentence, not part of the id, path or name
PLAIN_TABLE_WIDTH = 10_000  # tables printed when stdout is not a terminal are never wrapped: a row is one line
Row = TypeVar("Row")
Columns = list[tuple[Column, Callable[[Row], str]]]


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

    def show(self, result: Any, render: Callable[..., None], *args: Any) -> int:
        """Under --json the result's document is stdout's only text; `render` still says on stderr what failed."""
        code = int(getattr(result, "exit_code", ExitCode.OK))
        if self.json_output:
            self.json({"ok": code == ExitCode.OK, **result.as_dict()})
        render(self, result, *args)
        return code

    def line(self, text: str) -> None:
        if self.interactive:
            self.console.print(text, markup=False)
        elif not self.json_output:
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
        if table.title:
            self.line(Text.from_markup(table.title).plain if isinstance(table.title, str) else str(table.title))
        table.title = table.box = None
        table.show_edge = table.show_lines = table.pad_edge = False
        for column in table.columns:
            column.no_wrap = True  # PLAIN_TABLE_WIDTH leaves room for every cell
        for row in _render(table, PLAIN_TABLE_WIDTH).splitlines():
            if row.strip():
                self.line(row.rstrip())

    def fits(self, table: Table, keep_whole: Iterable[str]) -> bool:
        """It fits this terminal and shows each string of ``keep_whole`` whole, as often as it is listed."""
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

    @staticmethod
    def stderr(message: str) -> None:
        print(f"wa-export: {message}", file=sys.stderr, flush=True)


def unbreakable_words(text: str | None) -> list[str]:
    """The words of a message a table must not split: ids, paths and variable names (``WORKSPACE_…_EMAIL``)."""
    words = (word.strip(SENTENCE_PUNCTUATION) for word in (text or "").split())
    return [word for word in words if "/" in word or "_" in word or OBJECT_ID.fullmatch(word)]


def column_table(rows: Iterable[Row], columns: Sequence[tuple[Column, Callable[[Row], str]]], **options: Any) -> Table:
    """A table from (column, cell of a row) pairs: a new column is one more pair; the columns can serve again."""
    table = Table(*(column.copy() for column, _ in columns), **options)
    for row in rows:
        table.add_row(*(cell(row) for _, cell in columns))
    return table


def styled(text: str, style: str | None) -> str:
    """``text`` (already escaped) as rich markup in ``style``; unchanged when there is none."""
    return f"[{style}]{text}[/{style}]" if style else text


def outcome_cell(outcome: str) -> str:
    return styled(escape(outcome), OUTCOME_STYLE.get(outcome))


def workspace_cell(name: str | None, workspace_id: str, separator: str = "\n") -> str:
    """The workspace's name, then its id dimmed (under it by default)."""
    return f"{escape(name or '') or '(unnamed)'}{separator}[dim]{escape(workspace_id)}[/dim]"


def display_path(path: str | os.PathLike[str] | None, export_dir: Path | None) -> str:
    """``path`` relative to EXPORT_DIR, as tables and log lines show it; in full when outside it (or no dir)."""
    if path and export_dir is not None and Path(path).is_relative_to(export_dir):
        return str(Path(path).relative_to(export_dir))
    return str(path or "")


def short_time(moment: datetime | None, settings: Settings) -> str:
    """'11-25 22:08' this year (short enough for an 80-column table), '2025-11-25 22:08' before."""
    if moment is None:
        return ""
    this_year = moment.astimezone(settings.export_timezone).year == datetime.now(settings.export_timezone).year
    return local_time(moment, settings, "%m-%d %H:%M" if this_year else MINUTE_FORMAT)
