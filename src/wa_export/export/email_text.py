"""Subject and body of an export email (plain text, for the workspace's people)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from wa_export.clock import SECOND_FORMAT, format_local
from wa_export.mail.message import OutgoingMail, single_line_or
from wa_export.settings import Settings
from wa_export.store.connection import Workspace
from wa_export.units import count_noun

POSSIBLE_DUPLICATE_SENTENCE = "This email may repeat messages that were already sent to you in an earlier export."
PROTECTED_SENTENCE = (
    "The attachment is password-protected with the password agreed separately; Excel, LibreOffice and Numbers ask "
    "for it when opening the file."
)
RESENT_PREFIX = "[Re-sent] "


@dataclass(frozen=True)
class Resent:
    """The export a resend repeats: its time (the subject's) and how many messages it held."""

    export_time: datetime
    recorded_count: int


def resent_sentence(export_time: datetime, zone: tzinfo, zone_name: str) -> str:
    when = format_local(export_time, zone)
    return f"This email repeats the export of {when} ({zone_name}), whose messages were already delivered."


def count_difference(rebuilt: int, recorded: int) -> str | None:
    """The sentence when a rebuilt workbook holds another number of messages than the export it repeats."""
    if rebuilt == recorded:
        return None
    return (
        f"This workbook holds {count_noun(rebuilt, 'message')} where the original export held {recorded}: "
        "messages were deleted, or chats moved to another workspace, since."
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
    resent: Resent | None = None,  # `wa-export resend`: the export this email repeats
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
    if resent is not None:
        repeated = [resent_sentence(resent.export_time, zone, zone_name)]
        repeated.append(count_difference(sum(by_status.values()), resent.recorded_count) or "")
        duplicate += " ".join(sentence for sentence in repeated if sentence) + "\n\n"
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
    if resent is not None:
        subject = RESENT_PREFIX + subject
    return OutgoingMail(to=recipients, subject=subject, body=body, attachment=path)
