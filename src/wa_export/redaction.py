"""Secrets out of every text the tool shows or stores: one redaction for all output and logs."""

from __future__ import annotations

import base64
import re
from urllib.parse import quote, quote_plus

# A secret shorter than this is replaced only where it stands as a whole token
# (no letter or digit right before or after it): a password "on" must not turn
# "Connection" into "C***necti***". Longer ones are replaced wherever they occur.
WHOLE_TOKEN_BELOW = 4


def redact(text: str, secrets: list[str]) -> str:
    """Replace every secret (and its URL-encoded forms) in `text` with ***.

    Longer forms go first, so a secret that contains another is replaced whole.
    """
    forms = {form for secret in secrets if secret for form in (secret, quote(secret, safe=""), quote_plus(secret))}
    for form in sorted(forms, key=len, reverse=True):
        if len(form) >= WHOLE_TOKEN_BELOW:
            text = text.replace(form, "***")
        else:
            text = re.sub(rf"(?<![0-9A-Za-z]){re.escape(form)}(?![0-9A-Za-z])", "***", text)
    return text


def smtp_auth_forms(username: str, password: str) -> list[str]:
    """What an SMTP login puts on the wire, which a server may echo back in its reply.

    AUTH PLAIN sends base64("\\0user\\0password") (some clients put the user
    first too), AUTH LOGIN base64(user) and base64(password) separately; each
    with and without its "=" padding.
    """
    if not password:
        return []
    blobs = [f"\0{username}\0{password}", f"{username}\0{username}\0{password}", password]
    if username:
        blobs.append(username)
    forms: list[str] = []
    for blob in blobs:
        encoded = base64.b64encode(blob.encode("utf-8")).decode("ascii")
        forms += [encoded, encoded.rstrip("=")]
    return list(dict.fromkeys(forms))
