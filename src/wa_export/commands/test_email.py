"""`wa-export test-email`: one short mail with a tiny sample workbook (fake rows), through the production mail path,
to `--to` or to a workspace's addresses as an export finds them (recipients.py; MongoDB is read only then)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from wa_export.clock import utc_now
from wa_export.errors import ExitCode, UsageProblem
from wa_export.mail.errors import MailError, MailStep, refusal
from wa_export.mail.message import OutgoingMail, check_recipients, check_sendable
from wa_export.mail.transport import MailSender, tls_mode
from wa_export.recipients import Recipients, from_environment, missing_hint, parse_address_list, recipients_for
from wa_export.settings import Settings
from wa_export.store.connection import mongo_errors, open_store, parse_workspace_id
from wa_export.units import local_time
from wa_export.workbook.writer import WorkbookWriter

SAMPLE_FILE_NAME = "wa_export_test.xlsx"
SAMPLE_WORKSPACE_ID = "000000000000000000000000"


@dataclass(frozen=True)
class TestEmailResult:
    __test__ = False  # not a pytest test class despite the name

    recipients: tuple[str, ...]
    server: str
    security: str
    subject: str
    attachment: str
    workspace_id: str | None
    error: MailError | None = None

    @property
    def exit_code(self) -> ExitCode:
        if self.error is None:
            return ExitCode.OK
        # Incomplete SMTP settings are a configuration error (like `export`); the rest is a failed delivery.
        return ExitCode.USAGE if self.error.step == "config" else ExitCode.FAILED

    def as_dict(self) -> dict[str, Any]:
        document = {item.name: getattr(self, item.name) for item in fields(self)} | {"exit_code": self.exit_code}
        return document if self.error is None else document | {"step": self.error.step, "error": str(self.error)}


def resolve_recipients(settings: Settings, workspace_id: str | None, to: Sequence[str]) -> Recipients:
    """--to wins (like `export --email`); else the workspace's addresses; `problem` is the refusal an export meets."""
    if to:
        return Recipients(parse_address_list(",".join(to), "--to"), "option", "--to")  # ConfigError: exit 2
    if workspace_id is None:
        where = "--to ADDRESS, or --workspace ID to use that workspace's configured addresses"
        raise UsageProblem(f"Say where to send the test: {where}.")
    recipients = from_environment(workspace_id, settings)
    if recipients is None and settings.export_recipients_field:
        with open_store(settings) as store, mongo_errors(settings):
            [workspace] = store.workspaces_by_id([workspace_id])  # raises UnknownWorkspace
        recipients = recipients_for(workspace, settings)
    if recipients is None or recipients.source == "none":
        hint = missing_hint(workspace_id, settings)
        raise UsageProblem(f"Workspace {workspace_id} has no address configured: {hint} or pass --to ADDRESS.")
    return recipients


def send_test_email(settings: Settings, workspace_id: str | None, to: Sequence[str]) -> TestEmailResult:
    workspace = str(parse_workspace_id(workspace_id)) if workspace_id is not None else None  # UnknownWorkspace
    resolved = resolve_recipients(settings, workspace, to)
    now = utc_now()
    # The time with its zone's name, as the body's "Sent at" line has it.
    subject = f"wa-export test email - {workspace or 'no workspace'} - {local_time(now, settings, zoned=True)}"
    server = f"{settings.smtp_server or '(not set)'}:{settings.smtp_port}"
    result = TestEmailResult(resolved.addresses, server, tls_mode(settings), subject, SAMPLE_FILE_NAME, workspace)
    try:
        # These checks run before anything is written or any connection is made.
        check_sendable(settings)
        if resolved.problem is not None:
            step: MailStep = "domain" if resolved.problem_kind == "domain" else "recipient"
            raise refusal(settings, step, resolved.problem[0].upper() + resolved.problem[1:], "")
        check_recipients(resolved.addresses, settings)
        with tempfile.TemporaryDirectory(prefix="wa-export-test-") as tmp:  # mkdtemp: 0700
            us, them, sample_id = "+10000000000", "+10000000001", workspace or SAMPLE_WORKSPACE_ID
            with WorkbookWriter(Path(tmp) / SAMPLE_FILE_NAME, settings.export_timezone) as writer:
                writer.append(us, them, "This is a wa-export test", now - timedelta(minutes=1), "received", sample_id)
                writer.append(them, us, "This is a wa-export test reply", now, "sent_via_ai", sample_id)
                sample = writer.commit()
            body = (
                f"This is a test email from wa-export.\n\nWorkspace: {workspace or '(none given)'}\n"
                f"SMTP server: {server} ({result.security})\n"
                f"Sent at: {now.astimezone(settings.export_timezone):%Y-%m-%d %H:%M:%S} {settings.timezone_name}\n\n"
                f"The attached {SAMPLE_FILE_NAME} has the format of the real exports and two fake rows.\n"
                "If you can read this, scheduled exports can reach this address.\n"
            )
            with MailSender(settings) as sender:
                sender.send(OutgoingMail(to=resolved.addresses, subject=subject, body=body, attachment=sample))
    except MailError as error:
        return replace(result, error=error)
    return result
