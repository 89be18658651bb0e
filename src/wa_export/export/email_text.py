"""Subject and body of an export email (plain text, for the workspace's people)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path

from wa_export.clock import SECOND_FORMAT, format_local
from wa_export.export.rows import STATUS_MEANINGS
from wa_export.mail.message import OutgoingMail, single_line_or
from wa_export.settings import Settings
from wa_export.store.connection import Workspace
from wa_export.units import count_noun, workspace_label

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
    file_name: str | None = None  # the original attachment's name, which the copy keeps


def count_difference(rebuilt: int, recorded: int) -> str | None:
    """The sentence when a rebuilt workbook holds another number of messages than the export it repeats."""
    if rebuilt == recorded:
        return None
    return (
        f"This workbook holds {count_noun(rebuilt, 'message')} where the original export held {recorded}: "
        "messages were deleted, or chats moved to another workspace, since."
    )


MANUAL_SUBJECT_PREFIX = "[Manual export] "


def window_sentence(start: datetime, end: datetime, zone: tzinfo, zone_name: str) -> str:
    """ "Messages received or sent between 2026-12-01 19:30:00 and 19:45:00 (Asia/Kolkata)": the end's date
    only when it differs."""
    first = format_local(start, zone, SECOND_FORMAT)
    last = format_local(end, zone, SECOND_FORMAT)
    if last[:10] == first[:10]:
        last = last[11:]
    return f"Messages received or sent between {first} and {last} ({zone_name})"


def status_sentence(statuses: Iterable[str]) -> str:
    """The Status values of this email's counts, explained in one line."""
    return "Status: " + "; ".join(f"{status} = {STATUS_MEANINGS.get(status, status)}" for status in statuses) + "."


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
    protected: bool = False,  # the workbook is encrypted with the workspace's password
    by_arrival: bool = True,  # a scheduled email (its window: arrival times); False: a manual one (message times)
    resent: Resent | None = None,  # `wa-export resend`: the export this email repeats
) -> OutgoingMail:
    """One export email about its workbook `path` (`part`: number, of how many)."""
    zone, zone_name, (number, parts) = settings.export_timezone, settings.timezone_name, part
    name, attachment_name = single_line_or(workspace.name, workspace.id), (resent and resent.file_name) or path.name
    on_request = "by wa-export on request; the regular emails continue as before."
    if resent is not None:
        first_line = f"Re-sent WhatsApp messages export for {name}: a copy of an earlier export"
        last_line = f"Sent again {on_request}"
    elif by_arrival:
        first_line, last_line = f"WhatsApp messages export for {name}", "Sent automatically by wa-export."
    else:
        first_line = f"Manual WhatsApp messages export for {name}, requested outside the regular schedule"
        last_line = f"Sent {on_request}"
    notes = [POSSIBLE_DUPLICATE_SENTENCE] if possible_duplicate else []
    if resent is not None:
        when = format_local(resent.export_time, zone)
        repeated = f"This email repeats the export of {when} ({zone_name}), whose messages were already delivered."
        difference = count_difference(sum(by_status.values()), resent.recorded_count)
        notes.append(repeated if difference is None else f"{repeated} {difference}")
    lines = [
        first_line,
        "",
        f"Workspace: {workspace_label(workspace.name, workspace.id)}",
        f"Part: {number} of {parts} (consecutive messages in the order they arrived; each part is a complete workbook)"
        if parts > 1
        else None,
        window_sentence(*window, zone, zone_name),
        # A scheduled email covers what reached the platform in its window: a late message comes with a later one.
        "A message that reaches us late comes with a later email, under its own time." if by_arrival else None,
        f"Times in the workbook's Timestamp column are in {zone_name}.",
        f"Total messages: {sum(by_status.values())}",
        "By status:",
        *(f"  {status}: {count}" for status, count in by_status.items()),
        status_sentence(by_status),
        f"File: {attachment_name}",
        PROTECTED_SENTENCE if protected else None,
        "",
        *(f"{note}\n" for note in notes),
        f"{last_line}\n",
    ]
    body = "\n".join(line for line in lines if line is not None)
    subject = f"{'' if by_arrival else MANUAL_SUBJECT_PREFIX}WhatsApp Messages Export - {name} - {format_local(run_time, zone)}"
    subject = (RESENT_PREFIX if resent else "") + subject + (f" (part {number} of {parts})" if parts > 1 else "")
    return OutgoingMail(to=recipients, subject=subject, body=body, attachment=path, attachment_name=attachment_name)
