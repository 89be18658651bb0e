"""`wa-export config`: the tables, one `INVALID` line per problem and a sentence on stderr, for a CI log."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output
from wa_export.commands.config import ConfigReport, SettingLine


def render_config(output: Output, report: ConfigReport) -> None:
    if output.json_output:
        output.json(report.as_dict())
    else:
        where = f".env file {report.env_file}" if report.env_file is not None else "no .env file"
        output.table(_table(f"wa-export settings (environment, {where})", report.settings))
        if report.workspace_addresses:
            output.table(_table("WORKSPACE_<ID>_EMAIL", report.workspace_addresses))
        for problem in report.problems:
            output.line(f"INVALID {problem.variable}: {problem.message}")
        for name in sorted({*report.unknown_variables, *report.misspelt_variables}):
            meant = report.misspelt_variables.get(name)
            advice = f"; did you mean {meant}?" if meant else " (a typo?)"
            output.line(f"WARNING {name} is not a wa-export setting and is ignored{advice}")
        output.line(report.summary())
    for warning in report.warnings:
        output.stderr(f"warning: {warning}")
    if report.problems:
        count = len(report.problems)
        output.stderr(
            f"{count} setting{'s are' if count != 1 else ' is'} invalid "
            f"({report.problem_variables}); "
            f"fix {'them' if count != 1 else 'it'} before enabling the timer."
        )


def _table(title: str, lines: list[SettingLine]) -> Table:
    table = Table(title=escape(title))
    for column in ("Variable", "Value", "Source", "Status"):
        table.add_column(column, overflow="fold")
    for line in lines:
        status = "[bold red]invalid[/bold red]" if line.problem else "[green]ok[/green]"
        table.add_row(escape(line.variable), escape(line.value or "(not set)"), escape(line.source), status)
    return table
