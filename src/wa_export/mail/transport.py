"""Email delivery with yagmail, with its known traps defeated (SPEC §7).

yagmail is the product's mail client, but used naively it

1. returns ``False`` from ``send()`` instead of raising once its retries are spent,
   and on a disconnect it logs in again and re-sends -- possibly a duplicate,
   if the server had already accepted the DATA;
2. looks a missing password up in keyring and then *prompts on the terminal*
   (a silent hang under cron);
3. attaches any content string that happens to be an existing file path, turns
   the plain-text part's newlines into ``<br>``, and guesses attachment types
   (``None/None`` for unknown extensions);
4. calls ``starttls()`` without an SSL context, i.e. without certificate checks
   (and defaults to implicit TLS on any port, ``smtp_ssl=True``);
5. opens a new connection for every ``send()``;
6. installs a stderr log handler on its module logger.

So: `YagmailConnection` (a ``yagmail.SMTP``) keeps yagmail's client object and
connection lifecycle but replaces the connect/login step (verified TLS, explicit
password, never a prompt) and the send step (one SMTP transaction, no silent
retry, all recipients accepted or nothing sent). The MIME message is built here
with the standard library so that body and subject are never interpreted as
paths or HTML, and the attachment carries exactly `XLSX_MIME`. `MailSender`
reuses one connection for every mail of a run.
"""

from __future__ import annotations

import logging
import mimetypes
import re
import smtplib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import yagmail

from wa_export.addresses import EMAIL_ADDRESS, outside_allowed_domains
from wa_export.redaction import redact
from wa_export.settings import Settings

__all__ = [
    "XLSX_MIME",
    "MailError",
    "MailSender",
    "MailStep",
    "OutgoingMail",
    "YagmailConnection",
    "build_message",
    "check_recipients",
    "check_sendable",
    "encoded_attachment_size",
    "single_line",
    "single_line_or",
    "tls_mode",
]

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

MailStep = Literal["config", "domain", "connect", "tls", "auth", "recipient", "data", "size"]

# Headers RFC 2047-encoded, bodies 7bit or quoted-printable: the message is pure
# ASCII, so it needs neither 8BITMIME nor SMTPUTF8 from the server.
_POLICY = policy.SMTP.clone(cte_type="7bit")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")

# yagmail's Client.__init__ puts a StreamHandler (stderr) on this logger; a library
# must not print, and its records could carry addresses. See YagmailConnection.
_YAGMAIL_LOGGER = "yagmail.log"


class MailError(Exception):
    """A mail could not be sent; ``str()`` is one sentence: what failed, then what to do.

    ``step`` says where it failed, ``hint`` is the advice alone, ``refused`` the
    recipients that were refused (by the allow-list or by the server), if any.
    """

    def __init__(self, step: MailStep, what: str, hint: str = "", *, refused: Sequence[str] = ()) -> None:
        self.step: MailStep = step
        self.what = what.rstrip(". ")
        self.hint = hint
        self.refused: tuple[str, ...] = tuple(refused)
        text = self.what
        if hint:
            text += "; " + _lower_first(hint)
        if not text.endswith("."):
            text += "."
        super().__init__(text)


def _lower_first(sentence: str) -> str:
    # "Check SMTP_PORT." -> "check SMTP_PORT." but "SMTP_CA_FILE ..." stays as it is.
    if len(sentence) > 1 and sentence[0].isupper() and sentence[1].islower():
        return sentence[0].lower() + sentence[1:]
    return sentence


def _error(
    settings: Settings, step: MailStep, what: str, hint: str = "", *, refused: Sequence[str] = ()
) -> MailError:
    """A MailError whose texts never contain a secret (server replies included)."""
    secrets = settings.secrets()
    return MailError(step, redact(what, secrets), redact(hint, secrets), refused=refused)


@dataclass(frozen=True)
class OutgoingMail:
    to: tuple[str, ...]
    subject: str
    body: str  # plain text, delivered verbatim as the text/plain part
    attachment: Path | None = None  # sent as XLSX_MIME when it ends in .xlsx


# --------------------------------------------------------------------------- checks


def check_sendable(settings: Settings) -> None:
    """Raise MailError(step="config") unless the settings can send a mail without asking anyone."""
    if not settings.smtp_server:
        raise _error(settings, "config", "SMTP_SERVER is not set", "Set SMTP_SERVER to your mail server's host name.")
    if settings.smtp_username and not settings.smtp_password:
        # Without this, yagmail would ask keyring and then prompt on the terminal.
        raise _error(
            settings,
            "config",
            "SMTP_USERNAME is set but SMTP_PASSWORD is not",
            "Set SMTP_PASSWORD (or unset SMTP_USERNAME for a server that needs no login).",
        )
    if settings.smtp_password and not settings.smtp_username:
        raise _error(
            settings,
            "config",
            "SMTP_PASSWORD is set but SMTP_USERNAME is not",
            "Set SMTP_USERNAME to the account the password belongs to.",
        )
    if not settings.smtp_from:
        raise _error(settings, "config", "No sender address", "Set SMTP_FROM (or SMTP_USERNAME) to an email address.")


def check_recipients(to: Sequence[str], settings: Settings) -> None:
    """Refuse, before any connection, recipients that are malformed or outside the allow-list."""
    if not to:
        raise _error(settings, "recipient", "The mail has no recipient", "Configure WORKSPACE_<ID>_EMAIL or pass an address.")
    invalid = [address for address in to if not isinstance(address, str) or not EMAIL_ADDRESS.match(address)]
    if invalid:
        shown = ", ".join(repr(address) for address in invalid)
        raise _error(
            settings,
            "recipient",
            f"Invalid recipient address(es) {shown}",
            "Use plain addresses such as ops@example.com.",
            refused=[str(address) for address in invalid],
        )
    outside = outside_allowed_domains(list(to), settings.export_allowed_email_domains)
    if outside:
        raise _error(
            settings,
            "domain",
            f"Recipient(s) {', '.join(outside)} are outside EXPORT_ALLOWED_EMAIL_DOMAINS "
            f"({', '.join(settings.export_allowed_email_domains)})",
            "Fix the address or add its domain to EXPORT_ALLOWED_EMAIL_DOMAINS.",
            refused=outside,
        )


def encoded_attachment_size(size: int) -> int:
    """Bytes a `size`-byte attachment takes in the message: base64 (4 per 3) plus CRLF every 76 characters.

    Mail servers limit the message, not the file: a 20 MB workbook is a ~27 MB message.
    """
    encoded = 4 * -(-size // 3)
    return encoded + 2 * -(-encoded // 76)


def _check_attachment(path: Path, settings: Settings) -> bytes:
    try:
        size = path.stat().st_size
    except OSError as error:
        raise _error(
            settings, "data", f"Cannot read the attachment {path} ({_describe(error)})", "Check that the export file exists."
        ) from None
    encoded = encoded_attachment_size(size)
    if encoded > settings.max_attachment_bytes:
        raise _error(
            settings,
            "size",
            f"The attachment is {encoded / (1024 * 1024):.1f} MB once encoded for email, over "
            f"EXPORT_MAX_ATTACHMENT_MB={settings.export_max_attachment_mb:g}",
            f"the file ({size / (1024 * 1024):.1f} MB) is kept at {path}; raise EXPORT_MAX_ATTACHMENT_MB "
            "if your mail server accepts larger messages, or export a shorter period.",
        )
    try:
        return path.read_bytes()
    except OSError as error:
        raise _error(
            settings, "data", f"Cannot read the attachment {path} ({_describe(error)})", "Check the file's permissions."
        ) from None


# --------------------------------------------------------------------------- message


def single_line(text: str) -> str:
    """`text` with CR/LF and other control characters replaced by spaces (header-injection safe)."""
    return " ".join(_CONTROL_CHARACTERS.sub(" ", text).split())


def single_line_or(text: object, fallback: str) -> str:
    """`single_line(text)`, or `fallback` when nothing printable is left (a name of only spaces/controls).

    For a tenant-controlled name in a subject: "Export - <name> - <date>", never "Export -  - <date>".
    """
    cleaned = single_line(text) if isinstance(text, str) else ""
    return cleaned or single_line(fallback)


def build_message(mail: OutgoingMail, sender: str, attachment_data: bytes | None = None) -> EmailMessage:
    """The MIME message: text/plain body verbatim, the attachment with its exact type.

    Built with the standard library instead of yagmail's prepare_message, which
    would attach a body that equals a file path, replace the plain part's
    newlines with <br>, and guess attachment types.
    """
    message = EmailMessage(policy=_POLICY)
    message["From"] = sender
    message["To"] = ", ".join(mail.to)
    message["Subject"] = single_line(mail.subject)
    message["Date"] = formatdate(usegmt=True)
    # An explicit domain: make_msgid() would otherwise call socket.getfqdn() (DNS).
    message["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[-1])
    message.set_content(mail.body, subtype="plain", charset="utf-8")
    if mail.attachment is not None:
        data = attachment_data if attachment_data is not None else mail.attachment.read_bytes()
        name = single_line(mail.attachment.name) or "attachment"
        if name.lower().endswith(".xlsx"):
            mime = XLSX_MIME
        else:
            mime = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
        maintype, subtype = mime.split("/", 1)
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return message


# --------------------------------------------------------------------------- connection


def tls_mode(settings: Settings) -> Literal["ssl", "starttls", "none"]:
    """SMTP_SECURITY resolved: auto means implicit TLS on 465 and STARTTLS anywhere else."""
    if settings.smtp_security == "auto":
        return "ssl" if settings.smtp_port == 465 else "starttls"
    return settings.smtp_security


def _tls_context(settings: Settings) -> ssl.SSLContext:
    """System CAs plus SMTP_CA_FILE; hostname checked, certificate required."""
    context = ssl.create_default_context()
    if settings.smtp_ca_file is not None:
        try:
            # In addition to the defaults (create_default_context(cafile=) would replace them).
            context.load_verify_locations(cafile=str(settings.smtp_ca_file))
        except (OSError, ssl.SSLError) as error:
            raise _error(
                settings,
                "config",
                f"SMTP_CA_FILE {settings.smtp_ca_file} cannot be loaded ({_describe(error)})",
                "Point SMTP_CA_FILE at a PEM file of CA certificates.",
            ) from None
    return context


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason)
    if isinstance(error, smtplib.SMTPResponseException):
        reply = error.smtp_error.decode("utf-8", "replace") if isinstance(error.smtp_error, bytes) else str(error.smtp_error)
        return f"{error.smtp_code} {' '.join(reply.split())}"
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def _reply(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}".strip()


def _ehlo_name(connection: smtplib.SMTP) -> str:
    """smtplib's EHLO name rule (FQDN, else the address literal) without its reverse-DNS lookup."""
    name = socket.gethostname()
    if "." in name:
        return name
    try:
        address = connection.sock.getsockname()[0] if connection.sock is not None else "127.0.0.1"
    except OSError:
        address = "127.0.0.1"
    return f"[IPv6:{address}]" if ":" in address else f"[{address}]"


class _DroppedBeforeData(Exception):
    """The connection went away before DATA was issued: the message was certainly not accepted."""


class YagmailConnection(yagmail.SMTP):  # type: ignore[misc]
    """yagmail's client with verified TLS, an explicit password and a single-attempt send.

    yagmail keeps the connection (``self.smtp``), its state and ``close()``;
    ``login``/``_login`` and ``_attempt_send`` are replaced because yagmail's own
    versions skip certificate checks, may prompt for a password, and retry a
    send after a disconnect (a possible duplicate) before returning False.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.mode = tls_mode(settings)
        super().__init__(
            user=settings.smtp_from,  # yagmail's "user" is the From / envelope sender
            password=settings.smtp_password or "",  # never None: None means keyring + prompt
            host=settings.smtp_server or "",
            port=settings.smtp_port,
            smtp_ssl=self.mode == "ssl",  # yagmail defaults to implicit TLS on any port
            smtp_starttls=self.mode == "starttls",
            smtp_skip_login=not settings.smtp_username,
            soft_email_validation=False,  # addresses are validated by check_recipients
        )
        self.set_logging(None)  # replace the stderr handler yagmail just installed
        yag_logger = logging.getLogger(_YAGMAIL_LOGGER)
        yag_logger.setLevel(logging.WARNING)
        yag_logger.propagate = False

    @staticmethod
    def handle_password(user: str, password: str | None) -> str:
        # yagmail.password.handle_password would consult keyring, then getpass/input.
        if password is None:
            raise MailError("config", "No SMTP password configured", "Set SMTP_PASSWORD.")
        return password

    def login(self) -> None:
        self._login(self.credentials)

    def _login(self, password: Any) -> None:
        settings = self.settings
        context = _tls_context(settings) if self.mode != "none" else None
        host, port = settings.smtp_server or "", settings.smtp_port
        where = f"{host}:{port}"
        connection: smtplib.SMTP
        try:
            # The constructor connects and reads the greeting (and closes its socket on
            # failure). local_hostname is a placeholder so smtplib skips socket.getfqdn()
            # (reverse DNS); the real EHLO name is set below, before EHLO is sent.
            if self.mode == "ssl":
                connection = smtplib.SMTP_SSL(
                    host, port, local_hostname="localhost", timeout=settings.smtp_timeout_seconds, context=context
                )
            else:
                connection = smtplib.SMTP(host, port, local_hostname="localhost", timeout=settings.smtp_timeout_seconds)
        except ssl.SSLError as error:
            raise self._tls_failure(
                error,
                f"TLS handshake with {where}",
                "Check SMTP_SECURITY and SMTP_PORT (465 speaks implicit TLS, 587 and 25 use STARTTLS).",
            ) from None
        except socket.gaierror as error:
            raise _error(
                settings, "connect", f"Cannot resolve SMTP server {host} ({_describe(error)})", "Check SMTP_SERVER and DNS."
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise self._unreachable(error) from None
        try:
            connection.local_hostname = _ehlo_name(connection)
            try:
                connection.ehlo_or_helo_if_needed()
                if self.mode == "starttls":
                    if not connection.has_extn("starttls"):
                        # Never fall back to plaintext: the password and the data would travel in clear.
                        raise _error(
                            settings,
                            "tls",
                            f"The SMTP server {where} does not offer STARTTLS",
                            "Use the server's TLS port (SMTP_SECURITY=ssl, usually port 465) "
                            "or, only on a trusted network, SMTP_SECURITY=none.",
                        )
                    try:
                        connection.starttls(context=context)
                    except ssl.SSLError as error:
                        raise self._tls_failure(
                            error, f"STARTTLS with {where}", "Check the server's TLS configuration."
                        ) from None
                    except smtplib.SMTPResponseException as error:
                        raise _error(
                            settings, "tls", f"The SMTP server {where} refused STARTTLS ({_describe(error)})",
                            "Check the server's TLS configuration.",
                        ) from None
                    connection.ehlo()
            except MailError:
                raise
            except (OSError, smtplib.SMTPException) as error:
                raise self._unreachable(error) from None
            self.smtp = connection
            self.is_closed = False
            if not self.smtp_skip_login:
                self._authenticate(connection, self.handle_password(settings.smtp_username or "", password))
        except BaseException:
            _close_quietly(connection)
            self.smtp = None
            self.is_closed = True
            raise

    def _tls_failure(self, error: ssl.SSLError, what: str, hint: str) -> MailError:
        """An untrusted certificate gets its own sentence; any other TLS failure names the step."""
        if isinstance(error, ssl.SSLCertVerificationError):
            return self._untrusted(error)
        return _error(self.settings, "tls", f"{what} failed ({_describe(error)})", hint)

    def _untrusted(self, error: ssl.SSLCertVerificationError) -> MailError:
        reason = _describe(error)
        if "mismatch" in reason.lower():
            hint = "Set SMTP_SERVER to a host name the server's certificate is issued for."
        else:
            hint = "If it uses a private CA, set SMTP_CA_FILE to that CA bundle."
        return _error(self.settings, "tls", f"The SMTP server's TLS certificate is not trusted ({reason})", hint)

    def _unreachable(self, error: BaseException) -> MailError:
        settings = self.settings
        reason = _describe(error)
        hint = "Check SMTP_SERVER/SMTP_PORT and the firewall."
        if "timed out" in reason:
            # Typical of STARTTLS spoken to an implicit-TLS port: both sides wait.
            hint = "Check SMTP_SERVER/SMTP_PORT, the firewall, and that SMTP_SECURITY matches the port (465 = ssl)."
        return _error(
            settings,
            "connect",
            f"Cannot connect to SMTP server {settings.smtp_server}:{settings.smtp_port} ({reason})",
            hint,
        )

    def _authenticate(self, connection: smtplib.SMTP, password: str) -> None:
        settings = self.settings
        user = settings.smtp_username or ""
        if not connection.has_extn("auth"):
            raise _error(
                settings,
                "auth",
                f"The SMTP server does not offer a login (AUTH) to user {user} on this connection",
                "Check SMTP_SECURITY (many servers offer AUTH only over TLS), "
                "or leave SMTP_USERNAME unset for a relay that needs no login.",
            )
        try:
            connection.login(user, password)
        except smtplib.SMTPAuthenticationError as error:
            raise _error(
                settings,
                "auth",
                f"The SMTP server refused the login for user {user} ({_describe(error)})",
                "Check SMTP_USERNAME/SMTP_PASSWORD (Gmail needs an app password).",
            ) from None
        except smtplib.SMTPNotSupportedError:
            raise _error(
                settings,
                "auth",
                f"The SMTP server offers no login method smtplib supports for user {user}",
                "Check the server's AUTH mechanisms (PLAIN, LOGIN or CRAM-MD5 are supported).",
            ) from None
        except (OSError, smtplib.SMTPException) as error:
            raise self._unreachable(error) from None

    def _attempt_send(self, recipients: list[str], msg_strings: str | bytes) -> dict[str, Any]:
        """One SMTP transaction; returns {} on success, raises MailError otherwise.

        Unlike smtplib.sendmail, a refused recipient aborts the transaction (RSET)
        before DATA: nobody receives a mail that counts as failed and is re-sent on
        the next run. Unlike yagmail, a failure is never retried here, because after
        DATA the server may already have accepted the message.
        """
        settings = self.settings
        connection = self.smtp
        payload = msg_strings.encode("ascii") if isinstance(msg_strings, str) else msg_strings
        options = [f"SIZE={len(payload)}"] if connection.has_extn("size") else []
        try:
            code, reply = connection.mail(self.user, options)
            if code == 421:
                raise _DroppedBeforeData(_reply(code, reply))
            if code != 250:
                _rset_quietly(connection)
                raise self._sender_refused(code, reply)
            refused: dict[str, str] = {}
            for recipient in recipients:
                code, reply = connection.rcpt(recipient)
                if code == 421:
                    raise _DroppedBeforeData(_reply(code, reply))
                if code not in (250, 251):
                    refused[recipient] = _reply(code, reply)
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            _close_quietly(connection)
            raise _DroppedBeforeData(_describe(error)) from None
        if refused:
            _rset_quietly(connection)
            details = "; ".join(f"{address}: {reply}" for address, reply in refused.items())
            raise _error(
                settings,
                "recipient",
                f"The SMTP server refused recipient(s) {', '.join(refused)} ({details})",
                "Check the address(es); the mail was sent to nobody and will be retried.",
                refused=list(refused),
            )
        try:
            code, reply = connection.data(payload)
        except smtplib.SMTPDataError as error:  # no 354: the message itself was not transferred
            _rset_quietly(connection)
            raise self._data_refused(error.smtp_code, error.smtp_error) from None
        except (smtplib.SMTPServerDisconnected, OSError) as error:
            _close_quietly(connection)
            raise _error(
                settings,
                "data",
                f"The connection to the SMTP server was lost while sending the message ({_describe(error)})",
                "It was probably not delivered and is retried on the next run; if it keeps "
                "happening, check the server's message size limit and logs.",
            ) from None
        if code != 250:
            _rset_quietly(connection)
            raise self._data_refused(code, reply)
        self.num_mail_sent += 1
        return {}

    def _sender_refused(self, code: int, reply: bytes | str) -> MailError:
        detail = _reply(code, reply)
        if code == 552:
            return _error(self.settings, "size", f"The SMTP server refused the message size ({detail})",
                          "Lower EXPORT_MAX_ATTACHMENT_MB below the server's limit.")
        if code in (530, 534, 535):
            return _error(self.settings, "auth", f"The SMTP server requires a login ({detail})",
                          "Set SMTP_USERNAME and SMTP_PASSWORD.")
        return _error(self.settings, "data", f"The SMTP server refused the sender {self.user} ({detail})",
                      "Set SMTP_FROM to an address the SMTP account may send as.")

    def _data_refused(self, code: int, reply: bytes | str) -> MailError:
        detail = _reply(code, reply)
        if code == 552:
            return _error(self.settings, "size", f"The SMTP server refused the message as too large ({detail})",
                          "Lower EXPORT_MAX_ATTACHMENT_MB below the server's limit.")
        return _error(self.settings, "data", f"The SMTP server refused the message ({detail})",
                      "Check the server's logs; the export is retried on the next run.")

    def alive(self) -> bool:
        """True when the open connection still answers (NOOP)."""
        if self.smtp is None or self.is_closed or self.smtp.sock is None:
            return False
        try:
            code, _ = self.smtp.noop()
        except (smtplib.SMTPException, OSError):
            return False
        return code == 250

    def close(self) -> None:
        """QUIT, never raising (yagmail's close lets socket errors through)."""
        connection = self.smtp
        self.is_closed = True
        if connection is None:
            return
        try:
            connection.quit()
        except Exception:
            pass
        finally:
            _close_quietly(connection)


def _close_quietly(connection: smtplib.SMTP) -> None:
    try:
        connection.close()
    except Exception:
        pass


def _rset_quietly(connection: smtplib.SMTP) -> None:
    try:
        connection.rset()
    except Exception:
        pass


# --------------------------------------------------------------------------- sender


class MailSender:
    """Sends every mail of a run over one SMTP connection (opened on first use).

    Use as a context manager; leaving it sends QUIT. A connection the server
    closed between two sends is reopened once; a failure after DATA started is
    reported, never retried (the server may have accepted the message).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connections_opened = 0  # connections made (TCP + TLS + login done)
        self._client: YagmailConnection | None = None

    def __enter__(self) -> MailSender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (QUIT); never raises."""
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def verify_login(self) -> None:
        """Connect, secure and log in (no mail sent): for `health --smtp-login` and `test-email`."""
        check_sendable(self.settings)
        self._connection()

    def send(self, mail: OutgoingMail) -> None:
        """Deliver `mail` to exactly `mail.to`, or raise MailError."""
        settings = self.settings
        check_sendable(settings)
        recipients = list(mail.to)
        check_recipients(recipients, settings)
        data = _check_attachment(mail.attachment, settings) if mail.attachment is not None else None
        payload = build_message(mail, settings.smtp_from or "", data).as_bytes()

        for attempt in (1, 2):
            client, reused = self._connection()
            # yagmail's own send() would return False once its retries are spent and
            # re-send after a disconnect; it is never called. _attempt_send (ours) is
            # one SMTP transaction that returns only when every recipient and the DATA
            # were accepted, and raises MailError for every failure: there is no
            # result to check, so a failed transmission can never pass as sent.
            try:
                client._attempt_send(recipients, payload)
            except _DroppedBeforeData as dropped:
                self._discard()
                if reused and attempt == 1:
                    continue  # the server closed an idle connection; nothing was transferred yet
                raise _error(
                    settings,
                    "connect",
                    f"The SMTP server {settings.smtp_server}:{settings.smtp_port} closed the connection "
                    f"before the message was sent ({dropped})",
                    "Check the server's logs and connection limits.",
                ) from None
            return

    def _connection(self) -> tuple[YagmailConnection, bool]:
        """The open connection (reused=True) if it still answers, else a new one."""
        if self._client is not None:
            if self._client.alive():
                return self._client, True
            self._discard()
        client = YagmailConnection(self.settings)
        client.login()
        self._client = client
        self.connections_opened += 1
        return client, False

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.smtp is not None:
            _close_quietly(client.smtp)
            client.is_closed = True
