"""Subject and body of an export email (plain text, for the workspace's people)."""

from __future__ import annotations

from datetime import datetime, tzinfo
from pathlib import Path

from wa_export.clock import SECOND_FORMAT, format_local
from wa_export.mail.message import OutgoingMail, single_line_or
from wa_export.settings import Settings
from wa_export.store.connection import Workspace

POSSIBLE_DUPLICATE_SENTENCE = "This email may repeat messages that were already sent to you in an earlier export."
PROTECTED_SENTENCE = (
    "The attachment is password-protected with the password agreed separately; Excel, LibreOffice and Numbers ask "
    "for it when opening the file."
)


def window_sentence(start: datetime, end: datetime, zone: tzinfo, zone_name: str) -> str:
    """ "Messages from 2026-12-01 19:30:00 to 19:45:00 (Asia/Kolkata)": the end's date only when it differs."""
    first = format_local(start, zone, SECOND_FORMAT)
    last = format_local(end, zone, SECOND_FORMAT)
    if last[:10] == first[:10]:
        last = last[11:]
    return f"Messages from {first} to {last} ({zone_name})"


def compose_export_mail(
    settings: Settings,
    workspace: Workspace,
    run_time: datetime,
    window: tuple[datetime, datetime],
    by_status: dict[str, int],
    path: Path,
    recipients: tuple[str, ...],
    part: tuple[int, int] = (1, 1),
    possible_duplicate: bool = False,
    by_arrival: bool = True,  # scheduled windows are arrival times; manual ones message timestamps
    *,
    protected: bool = False,  # the workbook is encrypted with the workspace's password
) -> OutgoingMail:
    """One export email about its workbook `path` (`part`: number, of how many)."""
    zone = settings.export_timezone
    zone_name = settings.timezone_name
    status_lines = "\n".join(f"  {status}: {count}" for status, count in by_status.items())
    number, parts = part
    part_line = ""
    if parts > 1:
        part_line = (
            f"Part: {number} of {parts} (consecutive messages in the order they arrived; "
            "each part is a complete workbook)\n"
        )
    meaning = (
        "The window is when the messages reached the platform; each row shows the message's own time.\n"
        if by_arrival
        else ""
    )
    duplicate = f"{POSSIBLE_DUPLICATE_SENTENCE}\n\n" if possible_duplicate else ""
    protection = f"{PROTECTED_SENTENCE}\n" if protected else ""
    body = (
        "WhatsApp messages export\n"
        "\n"
        f"Workspace: {workspace.name or '(unnamed)'} ({workspace.id})\n"
        f"{part_line}"
        f"{window_sentence(*window, zone, zone_name)}\n"
        f"{meaning}"
        f"Times in the workbook's Timestamp column are in {zone_name}.\n"
        f"Total messages: {sum(by_status.values())}\n"
        f"By status:\n{status_lines}\n"
        f"File: {path.name}\n"
        f"{protection}"
        "\n"
        f"{duplicate}"
        "Sent automatically by wa-export.\n"
    )
    name = single_line_or(workspace.name, workspace.id)
    subject = f"WhatsApp Messages Export - {name} - {format_local(run_time, zone)}"
    if parts > 1:
        subject += f" (part {number} of {parts})"
    return OutgoingMail(to=recipients, subject=subject, body=body, attachment=path)
