"""The `stats` command's output: messages per day and status with bars, and the exports made."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output, short_time, styled, workspace_cell
from wa_export.commands.stats import StatsReport
from wa_export.recipients import address_label, describe_recipients
from wa_export.settings import Settings
from wa_export.units import count_noun, local_time

_EIGHTHS = " ▏▎▍▌▋▊▉"
_SPARKS = "▁▂▃▄▅▆▇█"
BAR_WIDTH = 24
STATS_MAX_ROWS = 31  # longer periods are summed into buckets of several days: one screen
SPARK_MAX_WIDTH = 14


def bar(value: int, maximum: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar scaled to `maximum`, in eighths of a character so small days still show."""
    if maximum <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / maximum * width * 8))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


def sparkline(values: Sequence[int]) -> str:
    """One character per value, scaled to the largest; zero stays a visible ▁."""
    top = max(values, default=0)
    if top <= 0:
        return _SPARKS[0] * len(values)
    return "".join(_SPARKS[0] if value <= 0 else _SPARKS[max(1, round(value / top * 7))] for value in values)


def _chunks(count: int, limit: int) -> list[tuple[int, int]]:
    """[start, end) index ranges splitting `count` items into at most `limit` equal-sized groups."""
    size = max(1, -(-count // limit))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


def render_stats(output: Output, report: StatsReport, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": True, **report.as_dict()})
        return
    period = report.period
    span = f"{period.days[0]:%Y-%m-%d} – {period.days[-1]:%Y-%m-%d} ({period.timezone_name})"
    if report.single:
        _render_workspace_stats(output, report, settings, span)
    else:
        _render_stats_overview(output, report, settings, span)


def _render_workspace_stats(output: Output, report: StatsReport, settings: Settings, span: str) -> None:
    stats = report.workspaces[0]
    statuses = ["received", "sent_via_ai", "sent_by_human"]
    statuses += [s for s in sorted({s for day in stats.per_day for s in day.counts}) if s not in statuses]
    labels = {"received": "Received", "sent_via_ai": "AI", "sent_by_human": "Human"}
    rows: list[tuple[str, dict[str, int], int]] = []
    chunks = _chunks(len(stats.per_day), STATS_MAX_ROWS)
    for start, end in chunks:
        days = stats.per_day[start:end]
        label = f"{days[0].day:%a %Y-%m-%d}" if len(days) == 1 else f"{days[0].day:%Y-%m-%d} +{len(days) - 1}d"
        counts = {status: sum(day.counts.get(status, 0) for day in days) for status in statuses}
        rows.append((label, counts, sum(counts.values())))
    size = chunks[0][1] - chunks[0][0]
    per = "day" if size == 1 else f"{size} days"
    table = Table(
        title=escape(f"{stats.workspace.name or '(unnamed)'} ({stats.workspace.id}): messages per {per}, {span}"),
        box=box.SIMPLE_HEAD,
    )
    table.add_column("Day" if per == "day" else "Days", no_wrap=True)
    for status in statuses:
        table.add_column(labels.get(status, status.capitalize()), justify="right")
    table.add_column("Total", justify="right")
    table.add_column("Trend", no_wrap=True)
    top = max((total for _, _, total in rows), default=0)
    for label, counts, total in rows:
        table.add_row(label, *(str(counts[status]) for status in statuses), str(total), styled(bar(total, top), "cyan"))
    table.add_section()
    table.add_row("Total", *(str(stats.totals.get(status, 0)) for status in statuses), str(stats.total), "")
    output.table(table)
    exports = stats.exports
    output.line(
        f"Exports in these days: {exports.completed} completed ({count_noun(exports.messages_exported, 'message')}), "
        f"{exports.failed} failed"
        + (f" (last failure {local_time(exports.last_failure, settings)})" if exports.last_failure else "")
        + f"; last success: {local_time(exports.last_success, settings) or 'never'}."
    )
    if stats.workspace.status != "active":
        output.line(f"Workspace status is {stats.workspace.status!r}: scheduled runs skip it.")
    output.line(describe_recipients(stats.recipients, stats.workspace.id, settings) + ".")


# The Addr column: the source (env, db) plain, a missing or refused address marked.
ADDRESS_STYLE = {"no": "yellow", "bad": "bold red"}


def _render_stats_overview(output: Output, report: StatsReport, settings: Settings, span: str) -> None:
    period = report.period
    if not report.workspaces:
        output.line(f"No active workspaces ({span}).")
        return
    table = Table(title=f"Active workspaces, {span}", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Workspace / id", overflow="fold", min_width=24)
    table.add_column("Msgs", justify="right")
    table.add_column("Trend", no_wrap=True)
    # Short headers: with a week's trend the table fits 80 columns.
    table.add_column("Sent", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Last sent", no_wrap=True)
    table.add_column("Addr")
    chunks = _chunks(len(period.days), SPARK_MAX_WIDTH)
    name_id_separator = "\n" if output.interactive else " "  # plain output: one line per workspace
    for stats in report.workspaces:
        failed = stats.exports.failed
        totals = [day.total for day in stats.per_day]
        address = address_label(stats.recipients)
        table.add_row(
            workspace_cell(stats.workspace.name, stats.workspace.id, name_id_separator),
            str(stats.total),
            sparkline([sum(totals[start:end]) for start, end in chunks]),
            str(stats.exports.completed),
            styled(str(failed), "bold red" if failed else ""),
            short_time(stats.exports.last_success, settings) or "never",
            styled(address, ADDRESS_STYLE.get(address, "")),
        )
    workspaces = report.workspaces
    output.table(table, keep_whole=[stats.workspace.id for stats in workspaces])
    missing = sum(1 for stats in workspaces if not stats.address_configured)
    refused = sum(1 for stats in workspaces if stats.recipients.problem)
    output.line(
        f"{count_noun(len(workspaces), 'active workspace')}, {count_noun(sum(s.total for s in workspaces), 'message')}, "
        f"{count_noun(sum(s.exports.completed for s in workspaces), 'export')}, "
        f"{sum(s.exports.failed for s in workspaces)} failed, {missing} without an address"
        + (f", {refused} with a refused address (bad)" if refused else "")
        + ". Details: wa-export stats WORKSPACE_ID."
    )
