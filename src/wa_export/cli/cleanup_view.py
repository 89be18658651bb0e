"""The `cleanup` command's output: what was (or would be) deleted, per folder."""

from __future__ import annotations

from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from wa_export.cli.output import Output, display_path, short_time
from wa_export.commands.cleanup import CleanupResult
from wa_export.errors import ExitCode
from wa_export.settings import Settings
from wa_export.units import count_noun, format_bytes

CLEANUP_TABLE_ROWS = 15


def render_cleanup(output: Output, result: CleanupResult, settings: Settings) -> None:
    if output.json_output:
        output.json({"ok": result.exit_code == ExitCode.OK, **result.as_dict()})
    else:
        if not output.interactive:  # under cron the log is the audit trail: one line per file
            verb, removed = ("would delete", "would remove") if result.dry_run else ("deleted", "removed")
            for item in result.files:
                output.log(
                    "INFO", f"{verb} {item.kind} {display_path(item.path, settings.export_dir)} size={item.size}"
                )
            for folder in result.folders_removed:
                output.log("INFO", f"{removed} empty folder {display_path(folder, settings.export_dir)}")
        elif result.files:
            _render_cleanup_table(output, result, settings)
        for error in result.errors:
            output.log("ERROR", error)
        output.summary(result.summary(), result.exit_code)
    if result.event_error is not None:
        # stderr keeps --json stdout a single document; the event is part of the job (exit 3).
        output.stderr(
            f"the files were cleaned, but the cleanup event could not be recorded in system_logs: {result.event_error}"
        )


def _render_cleanup_table(output: Output, result: CleanupResult, settings: Settings) -> None:
    table = Table(title=f"wa-export cleanup{' (dry run)' if result.dry_run else ''}", box=box.SIMPLE_HEAD)
    table.add_column("Folder", overflow="fold")
    table.add_column("Files", justify="right", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    for column in ("Oldest", "Newest", "Removed"):
        table.add_column(column, no_wrap=True)
    folders: dict[str, list[Any]] = {}
    for item in result.files:
        folders.setdefault(item.folder, []).append(item)
    shown: list[str] = []
    for index, (folder, items) in enumerate(sorted(folders.items())):
        if index == CLEANUP_TABLE_ROWS:
            table.add_row(f"… and {count_noun(len(folders) - index, 'more folder')} (--json lists every file)")
            break
        times = [item.modified_at for item in items]
        shown.append(display_path(folder, settings.export_dir))
        table.add_row(
            escape(shown[-1]),
            str(len(items)),
            format_bytes(sum(item.size for item in items)),
            short_time(min(times), settings),
            short_time(max(times), settings),
            "yes" if folder in result.folders_removed else "",
        )
    output.table(table, keep_whole=shown)
