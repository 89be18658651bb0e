"""The export email as a MIME message, and the checks made before any connection.

Built with the standard library instead of yagmail's prepare_message, so that a
body or subject is never interpreted as a file path or HTML and the attachment
carries exactly `XLSX_MIME`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import mimetypes
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.utils import encode_rfc2231, formatdate, make_msgid
from pathlib import Path

from wa_export.addresses import EMAIL_ADDRESS, outside_allowed_domains
from wa_export.mail.errors import MailOutcome, describe_error, mail_error
from wa_export.settings import Settings, sending_problems

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Headers RFC 2047-encoded, bodies 7bit or quoted-printable: the message is pure
# ASCII, so it needs neither 8BITMIME nor SMTPUTF8 from the server.
_POLICY = policy.SMTP.clone(cte_type="7bit")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


@dataclass(frozen=True)
class OutgoingMail:
    to: tuple[str, ...]
    subject: str
    body: str  # plain text, delivered verbatim as the text/plain part
    attachment: Path | None = None  # sent as XLSX_MIME when it ends in .xlsx


def check_sendable(settings: Settings) -> None:
    """Raise MailError(step="config") unless the settings can send a mail without asking anyone.

    The rules are settings.sending_problems, which `wa-export config` applies too.
    """
    problems = sending_problems(settings)
    if problems:
        raise mail_error(settings, "config", problems[0].what, problems[0].hint, outcome=MailOutcome.REFUSED)


def check_recipients(to: Sequence[str], settings: Settings) -> None:
    """Refuse, before any connection, recipients that are malformed or outside the allow-list."""
    if not to:
        raise mail_error(
            settings,
            "recipient",
            "The mail has no recipient",
            "Configure WORKSPACE_<ID>_EMAIL or pass an address.",
            outcome=MailOutcome.REFUSED,
        )
    invalid = [address for address in to if not isinstance(address, str) or not EMAIL_ADDRESS.match(address)]
    if invalid:
        shown = ", ".join(repr(address) for address in invalid)
        raise mail_error(
            settings,
            "recipient",
            f"Invalid recipient address(es) {shown}",
            "Use plain addresses such as ops@example.com.",
            refused=[str(address) for address in invalid],
            outcome=MailOutcome.REFUSED,
        )
    outside = outside_allowed_domains(list(to), settings.export_allowed_email_domains)
    if outside:
        raise mail_error(
            settings,
            "domain",
            f"Recipient(s) {', '.join(outside)} are outside EXPORT_ALLOWED_EMAIL_DOMAINS "
            f"({', '.join(settings.export_allowed_email_domains)})",
            "Fix the address or add its domain to EXPORT_ALLOWED_EMAIL_DOMAINS.",
            refused=outside,
            outcome=MailOutcome.REFUSED,
        )


def encoded_attachment_size(size: int) -> int:
    """Bytes a `size`-byte attachment takes in the message: base64 (4 per 3) plus CRLF every 76 characters.

    Mail servers limit the message, not the file: a 20 MB workbook is a ~27 MB message.
    """
    encoded = 4 * -(-size // 3)
    return encoded + 2 * -(-encoded // 76)


def check_attachment(path: Path, settings: Settings) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise mail_error(
            settings,
            "data",
            f"Cannot read the attachment {path} ({describe_error(error)})",
            "Check that the export file exists.",
            outcome=MailOutcome.REFUSED,
        ) from None
    encoded = encoded_attachment_size(size)
    if encoded > settings.max_attachment_bytes:
        raise mail_error(
            settings,
            "size",
            f"The attachment is {encoded / (1024 * 1024):.1f} MB once encoded for email, over "
            f"EXPORT_MAX_ATTACHMENT_MB={settings.export_max_attachment_mb:g}",
            f"the file ({size / (1024 * 1024):.1f} MB) is kept at {path}; raise EXPORT_MAX_ATTACHMENT_MB "
            "if your mail server accepts larger messages, or export a shorter period.",
            outcome=MailOutcome.REFUSED,
        )
    try:
        return path.read_bytes()
    except OSError as error:
        raise mail_error(
            settings,
            "data",
            f"Cannot read the attachment {path} ({describe_error(error)})",
            "Check the file's permissions.",
            outcome=MailOutcome.REFUSED,
        ) from None


def single_line(text: str) -> str:
    """`text` with CR/LF and other control characters replaced by spaces (header-injection safe)."""
    return " ".join(_CONTROL_CHARACTERS.sub(" ", text).split())


def single_line_or(text: object, fallback: str) -> str:
    """`single_line(text)`, or `fallback` when nothing printable is left (a name of only spaces/controls).

    For a tenant-controlled name in a subject: "Export - <name> - <date>", never "Export -  - <date>".
    """
    cleaned = single_line(text) if isinstance(text, str) else ""
    return cleaned or single_line(fallback)


def from_header(sender: str, display_name: str = "") -> str | Address:
    """``WhatsApp Exports <exports@example.com>``, or the bare address without a display name.

    The name is made one line (header-injection safe); the email package quotes
    it where needed and RFC 2047-encodes it when it is not ASCII.
    """
    name = single_line(display_name)
    if not name:
        return sender
    return Address(display_name=name, addr_spec=sender)


def build_message(
    mail: OutgoingMail, sender: str, attachment_data: bytes | None = None, *, sender_name: str = ""
) -> bytes:
    """The MIME message as the bytes SMTP sends: the text/plain body verbatim, the attachment with its exact type.

    ``sender`` is the address (envelope and From), ``sender_name`` the From display name.

    Not yagmail's prepare_message, which would attach a body that equals a file
    path, replace the plain part's newlines with <br>, and guess attachment types;
    and not the email package's EmailMessage either, which parses and refolds all
    of a message's 16 headers and took ~5 ms of CPU per message, half of a busy
    workspace's budget in a scheduled run (bench/RESULTS.md). The message always
    has this shape: the email package still writes its From, To and Subject lines
    (quoting, RFC 2047, folding), its Date and Message-ID; the parts are encoded
    by binascii. tests/test_mail.py parses what comes out with the email package
    and compares it with an EmailMessage of the same content.
    """
    headers = [
        _from_line(sender, sender_name),
        _header_line("To", ", ".join(mail.to)),
        _header_line("Subject", single_line(mail.subject)),
        f"Date: {formatdate(usegmt=True)}\r\n".encode(),
        # An explicit domain: make_msgid() would otherwise call socket.getfqdn() (DNS).
        f"Message-ID: {make_msgid(domain=sender.rsplit('@', 1)[-1])}\r\n".encode(),
        b"MIME-Version: 1.0\r\n",
    ]
    text = _text_part(mail.body)
    if mail.attachment is None:
        return b"".join([*headers, *text])
    data = attachment_data if attachment_data is not None else mail.attachment.read_bytes()
    name = single_line(mail.attachment.name) or "attachment"
    if name.lower().endswith(".xlsx"):
        mime = XLSX_MIME
    else:
        mime = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    attachment = [
        f"Content-Type: {mime}\r\n".encode(),
        b"Content-Transfer-Encoding: base64\r\n",
        _content_disposition(name),
        b"\r\n",
        _base64_lines(data),
    ]
    # Base64 never holds "=====...", so only the verbatim-looking text could; never in practice.
    while True:
        boundary = f"===============wa-export-{secrets.token_hex(12)}==".encode()
        if not any(boundary in piece for piece in text):
            break
    return b"".join(
        [
            *headers,
            b'Content-Type: multipart/mixed; boundary="' + boundary + b'"\r\n\r\n',
            b"--" + boundary + b"\r\n",
            *text,
            b"\r\n",
            b"--" + boundary + b"\r\n",
            *attachment,
            b"\r\n",
            b"--" + boundary + b"--\r\n",
        ]
    )


def _header_line(name: str, value: str) -> bytes:
    """One header line as the email package writes it: quoted, RFC 2047-encoded where not ASCII, folded.

    A short line of plain ASCII (no encoded-word look-alike) is the same line whether
    the package folds it or not, so it is written as it is.
    """
    line = f"{name}: {value}"
    if len(line) <= 78 and line.isascii() and line.isprintable() and "=?" not in value:
        return f"{line}\r\n".encode("ascii")
    return _folded(name, value)


@functools.lru_cache(maxsize=32)
def _from_line(sender: str, sender_name: str) -> bytes:
    """The From line, the same for every message of a run: folded once."""
    return _folded("From", from_header(sender, sender_name))


def _folded(name: str, value: object) -> bytes:
    """The email package's own header line for `value` (an Address or text), CRLF-ended."""
    folded: str = _POLICY.header_factory(name, value).fold(policy=_POLICY)
    return folded.encode("ascii")


def _text_part(body: str) -> list[bytes]:
    """The text/plain part, quoted-printable: plain ASCII stays readable, anything else survives any server."""
    text = "\r\n".join(body.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    if not text.endswith("\r\n"):
        text += "\r\n"  # the part ends with a line break, as the email package ends it
    # With CRLF line breaks in its input, b2a_qp writes its soft breaks as "=\r\n" too.
    encoded = binascii.b2a_qp(text.encode("utf-8"), istext=True)
    return [
        b'Content-Type: text/plain; charset="utf-8"\r\n',
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"\r\n",
        encoded,
    ]


def _content_disposition(filename: str) -> bytes:
    if filename.isascii() and filename.isprintable() and '"' not in filename and "\\" not in filename:
        parameter = f'filename="{filename}"'
    else:  # RFC 2231, as mail clients read a non-ASCII file name
        parameter = f"filename*={encode_rfc2231(filename, 'utf-8')}"
    if len(parameter) + len("Content-Disposition: attachment; ") <= 78:
        return f"Content-Disposition: attachment; {parameter}\r\n".encode("ascii")
    return f"Content-Disposition: attachment;\r\n {parameter}\r\n".encode("ascii")


def _base64_lines(data: bytes) -> bytes:
    """Base64 in lines of 76 characters, each ended by CRLF (what encoded_attachment_size counts)."""
    return base64.encodebytes(data).replace(b"\n", b"\r\n")
