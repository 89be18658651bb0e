"""Mail failures: one exception whose text is one sentence, what failed and then what to do."""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from typing import Literal

from wa_export.redaction import redact
from wa_export.settings import Settings

MailStep = Literal[
    "config", "domain", "connect", "tls", "auth", "recipient", "data", "size", "timeout", "stopped"
]

# Failures that would repeat for every later email of the run, so a run stops
# sending after the first one: the server cannot be reached, secured or logged
# into, or it let a message transaction run out of SMTP_TIMEOUT_SECONDS (a
# server that stalls after DATA would otherwise cost one full timeout per
# workspace), or the run was asked to stop.
RUN_FATAL_STEPS: frozenset[MailStep] = frozenset({"config", "connect", "tls", "auth", "timeout", "stopped"})


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


def mail_error(
    settings: Settings, step: MailStep, what: str, hint: str = "", *, refused: Sequence[str] = ()
) -> MailError:
    """A MailError whose texts never contain a secret (server replies included)."""
    secrets = settings.secrets()
    return MailError(step, redact(what, secrets), redact(hint, secrets), refused=refused)



def describe_error(error: BaseException) -> str:
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

