"""The `demo` command's output: what the demo exported and where its workbooks and emails are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import (
    OUTCOME_STYLE,
    Output,
)

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    from wa_export.demo.run import DemoResult

def render_demo(output: Output, result: DemoResult) -> None:
    from pathlib import (
        PurePath,  # the table shows file names; full paths follow below it
    )

    if output.json_output:
        output.json(result.as_dict())
        return
    run = result.run
    if output.interactive:
        table = Table(title="wa-export demo")
        for column in ("Workspace", "Outcome", "Messages", "Workbook"):
            table.add_column(column, overflow="fold")
        for workspace in run.workspaces:
            style = OUTCOME_STYLE.get(workspace.outcome, "")
            table.add_row(
                escape(workspace.workspace_name),
                f"[{style}]{workspace.outcome}[/{style}]" if style else workspace.outcome,
                str(workspace.message_count),
                escape(PurePath(workspace.file_path).name if workspace.file_path else workspace.reason or ""),
            )
        output.table(table)
    output.line(run.summary())
    output.line(f"Workbooks ({len(result.workbooks)}) in {result.exports_dir}:")
    for path in result.workbooks:
        output.line(f"  {path}")
    output.line(f"Emails ({len(result.emails)}) as .eml files in {result.mail_dir}:")
    for path in result.emails:
        output.line(f"  {path}")
    output.line("Both local servers are stopped. Next: configure .env for your servers and run `wa-export health`.")
