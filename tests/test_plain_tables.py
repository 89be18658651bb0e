"""Output.table when stdout is not a terminal (cron, pipes): plain lines, one per row."""

from __future__ import annotations

import pytest
from rich import box
from rich.table import Table

from wa_export.cli.render import Output

BOX_CHARACTERS = set("─━│┃┌┐└┘├┤┬┴┼╭╮╰╯═║╔╗╚╝╷╵╶╴")


def _table() -> Table:
    table = Table(title="[bold]Exports[/bold], newest first", box=box.SIMPLE_HEAD)
    table.add_column("Workspace", overflow="fold", min_width=10)
    table.add_column("Status", no_wrap=True)
    table.add_column("Recipients / error", overflow="fold", min_width=20)
    long_error = "authentication failed: " + "the server said no " * 20
    table.add_row("Acme Corporation International", "[red]failed[/red]", long_error.strip())
    table.add_section()
    table.add_row("Other", "completed", "ops@other.test")
    return table


def test_plain_table_has_no_box_and_one_line_per_row(capsys: pytest.CaptureFixture[str]) -> None:
    output = Output(json_output=False)
    assert not output.interactive  # pytest captures stdout: not a terminal
    output.table(_table())
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Exports, newest first"  # the title as a plain line, markup removed
    assert lines[1].split() == ["Workspace", "Status", "Recipients", "/", "error"]
    assert len(lines) == 4, lines  # title, header, one line per row: nothing wrapped
    assert lines[2].startswith("Acme Corporation International") and "failed" in lines[2]
    assert lines[2].endswith("the server said no")  # the whole cell, not folded onto more lines
    assert lines[3].split() == ["Other", "completed", "ops@other.test"]
    assert not BOX_CHARACTERS & set("".join(lines))
    assert all(line == line.rstrip() for line in lines) and "\x1b[" not in "".join(lines)


def test_stderr_lines_go_through_output(capsys: pytest.CaptureFixture[str]) -> None:
    Output(json_output=True).stderr("something went wrong")
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "wa-export: something went wrong\n"
