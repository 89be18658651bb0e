"""The export email as the bytes SMTP sends, and the checks made before any connection."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from wa_export.mail.errors import describe_error, refusal
from wa_export.recipients import EMAIL_ADDRESS, outside_allowed_domains
from wa_export.settings import Settings, sending_problems

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# CRLF, lines of at most 78 characters, all ASCII: the server needs neither 8BITMIME nor SMTPUTF8.
_POLICY = policy.SMTP.clone(cte_type="7bit")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class OutgoingMail:
    to: tuple[str, ...]
    subject: str
    body: str  # plain text, delivered verbatim as the text/plain part
    attachment: Path | None = None  # sent as XLSX_MIME when it ends in .xlsx
    attachment_name: str | None = None  # the name the recipient sees; None: the file's own


def check_sendable(settings: Settings) -> None:
    if problems := sending_problems(settings):
        raise refusal(settings, "config", problems[0].what, problems[0].hint)


def check_recipients(to: Sequence[str], settings: Settings) -> None:
    if not to:
        hint = "Configure WORKSPACE_<ID>_EMAIL or pass an address."
        raise refusal(settings, "recipient", "The mail has no recipient", hint)
    invalid = [address for address in to if not isinstance(address, str) or not EMAIL_ADDRESS.match(address)]
    if invalid:
        what = f"Invalid recipient address(es) {', '.join(repr(address) for address in invalid)}"
        hint = "Use plain addresses such as ops@example.com."
        raise refusal(settings, "recipient", what, hint, refused=[str(address) for address in invalid])
    allowed = settings.export_allowed_email_domains
    if outside := outside_allowed_domains(list(to), allowed):
        what = f"Recipient(s) {', '.join(outside)} are outside EXPORT_ALLOWED_EMAIL_DOMAINS ({', '.join(allowed)})"
        hint = "Fix the address or add its domain to EXPORT_ALLOWED_EMAIL_DOMAINS."
        raise refusal(settings, "domain", what, hint, refused=outside)


def encoded_attachment_size(size: int) -> int:
    """Bytes a `size`-byte attachment takes in the message (base64 lines of 76 + CRLF)."""
    encoded = 4 * -(-size // 3)
    return encoded + 2 * -(-encoded // 76)


def check_attachment(path: Path, settings: Settings) -> bytes:
    """The attachment's bytes, read only once its encoded size is known to fit EXPORT_MAX_ATTACHMENT_MB."""
    try:
        size = path.stat().st_size
        if encoded_attachment_size(size) <= settings.max_attachment_bytes:
            return path.read_bytes()
    except OSError as error:
        what = f"Cannot read the attachment {path} ({describe_error(error)})"
        raise refusal(settings, "data", what, "Check that the export file exists and is readable.") from None
    what = f"The attachment is {encoded_attachment_size(size) / 2**20:.1f} MB once encoded for email, over EXPORT_MAX_ATTACHMENT_MB={settings.export_max_attachment_mb:g}"
    hint = f"the file ({size / 2**20:.1f} MB) is kept at {path}; raise EXPORT_MAX_ATTACHMENT_MB if your mail server accepts larger messages, or export a shorter period."
    raise refusal(settings, "size", what, hint)


def single_line(text: str) -> str:
    """`text` with CR/LF and other control characters replaced by spaces (header-injection safe)."""
    return " ".join(_CONTROL_CHARACTERS.sub(" ", text).split())


def single_line_or(text: object, fallback: str) -> str:
    """`single_line(text)`, or `fallback` when nothing printable is left."""
    return (single_line(text) if isinstance(text, str) else "") or single_line(fallback)


def from_header(sender: str, display_name: str = "") -> str | Address:
    """``WhatsApp Exports <exports@example.com>`` (name made one line), or the bare address without a name."""
    name = single_line(display_name)
    return Address(display_name=name, addr_spec=sender) if name else sender


def build_message(mail: OutgoingMail, sender: str, data: bytes | None = None, *, sender_name: str = "") -> bytes:
    """The message as SMTP sends it; not yagmail's prepare_message, which attaches content that is an existing path."""
    message = EmailMessage(policy=_POLICY)
    message["From"] = from_header(sender, sender_name)
    message["To"] = ", ".join(mail.to)
    message["Subject"] = single_line(mail.subject)
    message["Date"] = datetime.now(UTC)
    # An explicit domain: make_msgid() would otherwise call socket.getfqdn() (DNS).
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    message.set_content(mail.body, charset="utf-8")
    if mail.attachment is not None:
        data = data if data is not None else mail.attachment.read_bytes()
        name = single_line(mail.attachment_name or mail.attachment.name) or "attachment"
        subtype = XLSX_MIME.split("/")[1] if name.lower().endswith(".xlsx") else "octet-stream"
        message.add_attachment(data, maintype="application", subtype=subtype, filename=name)
    return message.as_bytes()
