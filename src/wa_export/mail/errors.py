"""Mail failures: one exception whose text is one sentence (what failed, then what to do), and `MailOutcome`: a
failure *refused* left nothing on the server; *outcome unknown*, the content went out after 354 and no answer came."""

from __future__ import annotations

import smtplib
import socket
import ssl
from collections.abc import Sequence
from enum import StrEnum
from typing import Literal

from wa_export.redaction import redact
from wa_export.settings import Settings

MailStep = Literal["config", "domain", "connect", "tls", "auth", "recipient", "data", "size", "timeout", "stopped"]
# Failures every later email of the run would repeat (a transaction timeout too), so a run stops after the first.
RUN_FATAL_STEPS: frozenset[MailStep] = frozenset({"config", "connect", "tls", "auth", "timeout", "stopped"})
# The clause every outcome-unknown failure ends with, so no such failure reads as harmless to retry.
MAY_DUPLICATE = "the server may have accepted the message, so sending it again may deliver it twice"
# What a session setup waits for: the sentence of a failure depends on it.
WAITING_FOR_CONNECTION = "the TCP connection"
WAITING_FOR_GREETING = "the server's greeting"
TLS_HANDSHAKE = "the TLS handshake and the greeting"
STARTTLS = "the reply to STARTTLS and the TLS handshake"


class MailOutcome(StrEnum):
    REFUSED = "refused"
    UNKNOWN = "outcome_unknown"


class MailError(Exception):
    """``str()`` is one sentence without secrets (server replies included): what failed, what to do, then
    MAY_DUPLICATE if so. The outcome is always said outright: after a 354 a default would hide an unknown one."""

    def __init__(self, settings: Settings, step: MailStep, what: str, hint: str, *, outcome: MailOutcome) -> None:
        self.step, self.outcome = step, outcome
        self.refused: tuple[str, ...] = ()  # the addresses to blame, set by refusal()
        self.outcome_unknown = outcome is MailOutcome.UNKNOWN
        self.hint = redact(hint, settings.secrets())
        hint = self.hint.rstrip(". ")
        # "Check SMTP_PORT." -> "check SMTP_PORT." but "SMTP_CA_FILE ..." stays as it is.
        if len(hint) > 1 and hint[0].isupper() and hint[1].islower():
            hint = hint[0].lower() + hint[1:]
        clauses = [redact(what, settings.secrets()).rstrip(". "), hint, MAY_DUPLICATE if self.outcome_unknown else ""]
        super().__init__("; ".join(clause for clause in clauses if clause) + ".")


def refusal(settings: Settings, step: MailStep, what: str, hint: str = "", refused: Sequence[str] = ()) -> MailError:
    """A failure that left nothing on the server: sending again cannot duplicate."""
    error = MailError(settings, step, what, hint, outcome=MailOutcome.REFUSED)
    error.refused = tuple(refused)
    return error


def smtp_reply(code: int, message: bytes | str) -> str:
    """A server reply on one line: ``550 5.1.1 No such user``."""
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return " ".join(f"{code} {text}".split())


def describe_error(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError) and error.verify_message:
        return str(error.verify_message)
    if isinstance(error, ssl.SSLError) and error.reason:
        return str(error.reason)
    if isinstance(error, smtplib.SMTPResponseException):
        return smtp_reply(error.smtp_code, error.smtp_error)
    if isinstance(error, TimeoutError):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def setup_failure(settings: Settings, error: OSError, waiting_for: str) -> MailError:
    """A failed session setup, by the error and what the setup was waiting for."""
    reason, where = describe_error(error), f"{settings.smtp_server}:{settings.smtp_port}"
    step: MailStep = "tls"
    if isinstance(error, ssl.SSLCertVerificationError) and waiting_for in (TLS_HANDSHAKE, STARTTLS):
        what = f"The SMTP server's TLS certificate is not trusted ({reason})"
        hint = "If it uses a private CA, set SMTP_CA_FILE to that CA bundle."
        if "mismatch" in reason.lower():
            hint = "Set SMTP_SERVER to a host name the server's certificate is issued for."
    elif isinstance(error, ssl.SSLError) and waiting_for == TLS_HANDSHAKE:
        what = f"TLS handshake with {where} failed ({reason})"
        hint = "Check SMTP_SECURITY and SMTP_PORT (465 speaks implicit TLS, 587 and 25 use STARTTLS)."
    elif isinstance(error, ssl.SSLError | smtplib.SMTPResponseException) and waiting_for == STARTTLS:
        what, hint = f"STARTTLS with {where} failed ({reason})", "Check the server's TLS configuration."
    elif isinstance(error, smtplib.SMTPAuthenticationError):
        step, what = "auth", f"The SMTP server refused the login for user {settings.smtp_username} ({reason})"
        hint = "Check SMTP_USERNAME/SMTP_PASSWORD (Gmail needs an app password)."
    elif isinstance(error, socket.gaierror):
        step, what = "connect", f"Cannot resolve SMTP server {settings.smtp_server} ({reason})"
        hint = "Check SMTP_SERVER and DNS."
    else:
        step, what = "connect", f"Cannot connect to SMTP server {where} ({reason})"
        hint = "Check SMTP_SERVER/SMTP_PORT and the firewall."
        if "timed out" in reason:  # typical of STARTTLS spoken to an implicit-TLS port: both sides wait
            hint = "Check SMTP_SERVER/SMTP_PORT, the firewall, and that SMTP_SECURITY matches the port (465 = ssl)."
    return refusal(settings, step, what, hint)


def dropped(settings: Settings, reason: str) -> MailError:
    """Gone before DATA, so nothing was sent: a transaction's only "connect" failure (send() retries it once)."""
    where = f"{settings.smtp_server}:{settings.smtp_port}"
    what = f"The SMTP server {where} closed the connection before the message was sent ({reason})"
    return refusal(settings, "connect", what, "Check the server's logs and connection limits.")


def reply_refused(
    settings: Settings, code: int, reply: bytes | str, command: str = "DATA", after_354: bool = False
) -> MailError:
    """MAIL FROM or DATA refused. After the content went out (354), a 4xx/5xx is a definite rejection (RFC 5321)
    and any other reply leaves the outcome unknown."""
    detail = smtp_reply(code, reply)
    if after_354 and not 400 <= code < 600:
        what = f"The SMTP server gave an unexpected reply to the message ({detail})"
        return MailError(settings, "data", what, "Check the server's logs.", outcome=MailOutcome.UNKNOWN)
    step: MailStep = "data"
    if code == 552:  # for the message's size: announced (SIZE= on MAIL FROM) or found out (DATA)
        step, what = "size", f"The SMTP server refused the message as too large ({detail})"
        hint = "Lower EXPORT_MAX_ATTACHMENT_MB below the server's limit."
    elif command == "DATA":
        what = f"The SMTP server refused the message ({detail})"
        hint = "Check the server's logs; the export is retried on the next run."
    elif code in (530, 534, 535):
        step, what = "auth", f"The SMTP server requires a login ({detail})"
        hint = "Set SMTP_USERNAME and SMTP_PASSWORD."
    else:
        what = f"The SMTP server refused the sender {settings.smtp_from} ({detail})"
        hint = "Set SMTP_FROM to an address the SMTP account may send as."
    return refusal(settings, step, what, hint)
