"""Mail failures: one exception whose text is one sentence (what failed, then what to do), and `MailOutcome`: a
failure *refused* left nothing on the server; *outcome unknown*, the content went out after 354 and no answer came."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from enum import StrEnum
from typing import Literal

from wa_export.redaction import redact
from wa_export.settings import Settings

MailStep = Literal["config", "domain", "connect", "tls", "auth", "recipient", "data", "size", "timeout", "stopped"]
# Failures that would repeat for every later email of the run, so a run stops sending after the first (a message
# transaction out of SMTP_TIMEOUT_SECONDS too: else one full timeout per workspace).
RUN_FATAL_STEPS: frozenset[MailStep] = frozenset({"config", "connect", "tls", "auth", "timeout", "stopped"})
# The clause every outcome-unknown failure ends with, so no such failure reads as harmless to retry.
MAY_DUPLICATE = "the server may have accepted the message, so sending it again may deliver it twice"


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
