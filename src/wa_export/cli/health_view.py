"""The `health` command's output: one line per check (a table on a terminal) and the summary."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output, styled

if TYPE_CHECKING:  # rendering only; keeps `wa-export export` from importing them
    from wa_export.commands.health import HealthReport
    from wa_export.settings import Settings

HEALTH_STYLE = {"ok": "green", "warning": "yellow", "failed": "bold red", "skipped": "dim"}


def render_health(output: Output, report: HealthReport, settings: Settings) -> None:
    if output.json_output:
        output.json(report.as_dict())
        return
    if output.interactive:
        table = Table(title="wa-export health")
        for column in ("Check", "Status", "Reason"):
            table.add_column(column, overflow="fold")
        for check in report.checks:
            table.add_row(check.name, styled(check.status, HEALTH_STYLE.get(check.status, "")), escape(check.reason))
        output.table(table)
        for check in report.checks:  # unwrapped, so they can be copied into mongosh
            for command in check.details.get("commands", []):
                output.line(command)
        output.line(report.summary())
        return
    for check in report.checks:  # under cron: one greppable line per check
        output.log(f"{check.status:<7}", f"{check.name}: {check.reason}")
    output.summary(report.summary(), report.exit_code)
