"""Secrets out of every text the tool shows or stores: one redaction for all output and logs."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus


def redact(text: str, secrets: list[str]) -> str:
    """Every secret (and its URL-encoded forms) as ***, longest first (a secret may hold another)."""
    forms = {form for secret in secrets if secret for form in (secret, quote(secret, safe=""), quote_plus(secret))}
    for form in sorted(forms, key=len, reverse=True):
        # One shorter than 4 only as a whole token: a password "on" must not turn "Connection" into "C***necti***".
        text = (
            text.replace(form, "***")
            if len(form) >= 4
            else re.sub(rf"(?<![0-9A-Za-z]){re.escape(form)}(?![0-9A-Za-z])", "***", text)
        )
    return text


def smtp_auth_forms(username: str, password: str) -> list[str]:
    """What an SMTP login puts on the wire (a server may echo it): AUTH PLAIN's and LOGIN's base64, padded or not."""
    blobs = [f"\0{username}\0{password}", f"{username}\0{username}\0{password}", password, username]
    encoded = [base64.b64encode(blob.encode("utf-8")).decode("ascii") for blob in blobs if blob and password]
    return list(dict.fromkeys(form for text in encoded for form in (text, text.rstrip("="))))
