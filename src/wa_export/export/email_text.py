"""Subject and body of an export email (plain text, for the workspace's people)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from wa_export.clock import SECOND_FORMAT, format_local
from wa_export.mail.message import OutgoingMail, single_line_or
from wa_export.settings import Settings
from wa_export.store.connection import Workspace

POSSIBLE_DUPLICATE_SENTENCE = "This email may repeat messages that were already sent to you in an earlier export."


@dataclass(frozen=True)
class EmailFacts:
    """What one export email says about its workbook."""

    window_start: datetime
    window_end: datetime
    message_count: int
    by_status: dict[str, int]
    file_path: Path
    recipients: tuple[str, ...]
    part: int = 1
    parts: int = 1
    possible_duplicate: bool = False
    by_arrival: bool = True  # scheduled windows are arrival times; manual ones message timestamps


def window_sentence(start: datetime, end: datetime, zone: tzinfo, zone_name: str) -> str:
    """ "Messages from 2026-12-01 19:30:00 to 19:45:00 (Asia/Kolkata)": the end's date only when it differs."""
    first = format_local(start, zone, SECOND_FORMAT)
    last = format_local(end, zone, SECOND_FORMAT)
    if last[:10] == first[:10]:
        last = last[11:]
    return f"Messages from {first} to {last} ({zone_name})"


def compose_export_mail(
    settings: Settings, workspace: Workspace, facts: EmailFacts, run_time: datetime
) -> OutgoingMail:
    zone = settings.export_timezone
    zone_name = settings.timezone_name
    status_lines = "\n".join(f"  {status}: {count}" for status, count in facts.by_status.items())
    part_line = ""
    if facts.parts > 1:
        part_line = (
            f"Part: {facts.part} of {facts.parts} (consecutive messages in the order they arrived; "
            "each part is a complete workbook)\n"
        )
    meaning = (
        "The window is when the messages reached the platform; each row shows the message's own time.\n"
        if facts.by_arrival
        else ""
    )
    duplicate = f"{POSSIBLE_DUPLICATE_SENTENCE}\n\n" if facts.possible_duplicate else ""
    body = (
        "WhatsApp messages export\n"
        "\n"
        f"Workspace: {workspace.name or '(unnamed)'} ({workspace.id})\n"
        f"{part_line}"
        f"{window_sentence(facts.window_start, facts.window_end, zone, zone_name)}\n"
        f"{meaning}"
        f"Times in the workbook's Timestamp column are in {zone_name}.\n"
        f"Total messages: {facts.message_count}\n"
        f"By status:\n{status_lines}\n"
        f"File: {facts.file_path.name}\n"
        "\n"
        f"{duplicate}"
        "Sent automatically by wa-export.\n"
    )
    name = single_line_or(workspace.name, workspace.id)
    subject = f"WhatsApp Messages Export - {name} - {format_local(run_time, zone)}"
    if facts.parts > 1:
        subject += f" (part {facts.part} of {facts.parts})"
    return OutgoingMail(to=facts.recipients, subject=subject, body=body, attachment=facts.file_path)
