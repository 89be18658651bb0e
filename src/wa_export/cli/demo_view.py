"""The `demo` command's output: what the demo exported and where its workbooks and emails are."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output, display_path, outcome_cell

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    from wa_export.demo.run import DemoResult


def render_demo(output: Output, result: DemoResult) -> None:
    if output.json_output:
        output.json(result.as_dict())
        return
    run = result.run
    if output.interactive:
        table = Table(title="wa-export demo")
        table.add_column("Workspace", overflow="fold")
        table.add_column("Outcome", no_wrap=True)
        table.add_column("Messages", justify="right", no_wrap=True)
        table.add_column("Workbook (in the exports folder)", overflow="fold")
        paths = [display_path(workspace.file_path, result.exports_dir) for workspace in run.workspaces]
        for workspace, path in zip(run.workspaces, paths, strict=True):
            table.add_row(
                escape(workspace.workspace_name),
                outcome_cell(workspace.outcome),
                f"{workspace.message_count:,}",
                escape(path or workspace.reason or ""),
            )
        output.table(table, keep_whole=paths)
    output.line(run.summary())
    output.line(f"Workbooks ({len(result.workbooks)}) in {result.exports_dir}:")
    for workbook in result.workbooks:
        output.line(f"  {display_path(workbook, result.exports_dir)}")
    output.line(f"Emails ({len(result.emails)}) as .eml files in {result.mail_dir}:")
    for email in result.emails:
        output.line(f"  {display_path(email, result.mail_dir)}")
    output.line("Both local servers are stopped. Next: configure .env for your servers and run `wa-export health`.")
