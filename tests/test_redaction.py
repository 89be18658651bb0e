"""redact() and the secret list: base64 AUTH forms, the whole-token rule for short secrets, longest first."""

from __future__ import annotations

import base64
import smtplib
from pathlib import Path

import pytest

from wa_export.redaction import redact, smtp_auth_forms
from wa_export.settings import load_settings


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_short_secret_is_masked_only_as_a_whole_token() -> None:
    text = "ab about a tab: ab, (ab) ab."
    assert redact(text, ["ab"]) == "*** about a tab: ***, (***) ***."


def test_secret_of_four_characters_is_masked_anywhere() -> None:
    assert redact("xpw4x and pw4", ["pw4x"]) == "x*** and pw4"


def test_longer_secret_is_masked_whole_before_a_shorter_one_inside_it() -> None:
    assert redact("token hunter2-long", ["hunter2", "hunter2-long"]) == "token ***"


def test_url_encoded_forms_are_still_masked() -> None:
    assert redact("uri pa%2Fss and pa/ss", ["pa/ss"]) == "uri *** and ***"


def test_auth_forms_are_what_smtplib_sends() -> None:
    """The forms must be exactly the strings smtplib puts on the wire for AUTH PLAIN and AUTH LOGIN."""
    client = smtplib.SMTP()
    client.user, client.password = "user@example.com", "pw-é"
    plain = client.auth_plain()
    login_user, login_password = client.auth_login(), client.auth_login(challenge=b"Password:")
    forms = smtp_auth_forms("user@example.com", "pw-é")
    for wire in (plain, login_user, login_password):
        encoded = _b64(wire)
        assert encoded in forms and encoded.rstrip("=") in forms
    assert _b64("user@example.com\0user@example.com\0pw-é") in forms  # authzid = user, as some clients send
    assert smtp_auth_forms("user@example.com", "") == []


def test_settings_secrets_include_the_auth_forms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        environ={
            "SMTP_SERVER": "127.0.0.1",
            "SMTP_USERNAME": "wa-export",
            "SMTP_PASSWORD": "Pw-1234567",
            "SMTP_FROM": "exports@example.com",
        }
    )
    blob = _b64("\0wa-export\0Pw-1234567")
    reply = f"535 5.7.8 Authentication failed for {blob} / {blob.rstrip('=')} / {_b64('Pw-1234567')}"
    assert redact(reply, settings.secrets()) == "535 5.7.8 Authentication failed for *** / *** / ***"
