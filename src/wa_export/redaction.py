"""Secrets out of every text the tool shows or stores: one redaction for all output and logs."""

from __future__ import annotations

from urllib.parse import quote, quote_plus


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret (and its URL-encoded form) in `text` with ***."""
    for secret in secrets:
        for form in {secret, quote(secret, safe=""), quote_plus(secret)}:
            if form:
                text = text.replace(form, "***")
    return text
