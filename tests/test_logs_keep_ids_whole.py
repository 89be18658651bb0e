"""`logs` on a terminal of any width: an id or a variable name in an error is never split across lines."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from bson import ObjectId

from helpers import terminal_output
from wa_export.cli.render import render_logs, unbreakable_words
from wa_export.commands.logs import LogsReport, SystemLogEntry
from wa_export.settings import load_settings
from wa_export.store.logs import LedgerEntry, read_entry

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
ACME = "65a1b2c3d4e5f60718293a4b"
UNNAMED = "65a1b2c3d4e5f60718293a4c"
VARIABLE = f"WORKSPACE_{ACME}_EMAIL"
SLUG = "acme"  # a workspace's folder
# As long as a real refusal: the error column must wrap on every width.
ERRORS = {
    ACME: f"no recipient: {VARIABLE} is not set and the workspace document has no usable address for workspace {ACME}",
    UNNAMED: f"workspace {UNNAMED}: SMTP login refused by the relay, check SMTP_USER and SMTP_PASSWORD of this host now",
}


def _entry(number: int, workspace_id: str, name: str) -> LedgerEntry:
    start = datetime(2026, 3, 1, 13, 0, tzinfo=UTC) + timedelta(minutes=15 * number)
    return read_entry(
        {
            "_id": ObjectId(f"66aa00000000000000000{number:03d}"),
            "created_at": start + timedelta(minutes=15),
            "workspace_id": workspace_id,
            "workspace_name": name,
            "trigger": "scheduled",
            "window_start": start,
            "window_end": start + timedelta(minutes=15),
            "message_count": 12,
            "file_path": f"/srv/exports/{SLUG}/{SLUG}_whatsapp_messages_2026-03-01_{number:02d}.xlsx",
            "email_sent_to": "",
            "status": "failed",
            "error_message": ERRORS[workspace_id],
        }
    )


@pytest.mark.parametrize("width", [80, 100, 120, 140, 149, 150, 160, 185, 200])
def test_logs_never_split_an_id_or_variable_name_in_an_error(width: int) -> None:
    report = LogsReport(kind="export", limit=3, status=None, workspace_id=None)
    report.export_entries = [_entry(1, ACME, "Acme"), _entry(2, UNNAMED, ""), _entry(3, ACME, "Acme")]
    output, screen = terminal_output(width)
    render_logs(output, report, load_settings(environ={"EXPORT_DIR": "/srv/exports"}))
    text = ANSI.sub("", screen.getvalue())
    # Each entry's error shows its ids and variable names whole, however the table is laid out.
    assert text.count(VARIABLE) == 2, text
    assert text.count(ACME) == 4, text  # in the variable and after "workspace", in two entries
    assert text.count(UNNAMED) == 2, text  # as the entry's workspace and in its error
    assert "SMTP_USER" in text and "SMTP_PASSWORD" in text, text


@pytest.mark.parametrize("width", [60, 100, 160])
def test_logs_system_events_keep_their_ids_whole(width: int) -> None:
    message = f"cursor of workspace {ACME} moved back to 2026-03-01 13:00 by ops on host backup-01 for a resend " * 2
    report = LogsReport(kind="system", limit=1, status=None, workspace_id=None)
    report.system_entries = [SystemLogEntry(datetime(2026, 3, 1, tzinfo=UTC), "success", message, "cursor_move")]
    output, screen = terminal_output(width)
    render_logs(output, report, load_settings(environ={"EXPORT_DIR": "/srv/exports"}))
    assert ANSI.sub("", screen.getvalue()).count(ACME) == 2


def test_the_words_a_table_keeps_whole() -> None:
    text = f"({VARIABLE}) refused for {ACME}, see /etc/wa-export/env: a plain sentence."
    assert unbreakable_words(text) == [VARIABLE, ACME, "/etc/wa-export/env"]
