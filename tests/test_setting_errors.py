"""Configuration errors that used to print a secret or hide the fix.

A swapped .env line put the password where a value is echoed back; a password
with an unencoded "@", ":" or "/" made MONGODB_URI unreadable without saying why.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from faultkit import MONGO_PASSWORD, MONGO_USER
from helpers import one_stderr_line
from wa_export.settings import read_configuration, validate_environment

SWAPPED_SECRET = "Swapped-Pw_9q7Xk"


@pytest.mark.parametrize("password", ["p@ss", "pa:ss", "pa/ss"])
def test_unencoded_password_in_the_uri_gets_a_percent_encoding_hint(password, make_env, cli, smtp_server):
    result = cli(["export"], env=make_env(MONGODB_URI=f"mongodb://{MONGO_USER}:{password}word@127.0.0.1:27017/db"))
    assert result.returncode == 2, result.stdout + result.stderr
    sentence = one_stderr_line(result.stderr)
    assert "MONGODB_URI" in sentence and "percent-encode" in sentence and "%40" in sentence
    assert f"{password}word" not in sentence
    # Encoded, the same password is accepted (the server is then merely absent).
    encoded = f"mongodb://{MONGO_USER}:{quote(password + 'word', safe='')}@127.0.0.1:9/db"
    assert cli(["export"], env=make_env(MONGODB_URI=encoded, MONGODB_TIMEOUT_SECONDS="0.5")).returncode == 3


# --- a configuration error never echoes a secret ------------------------------------------------------


SWAPPED = {
    "SMTP_PORT": "SMTP_PORT must be a whole number.",
    "EXPORT_LAG_SECONDS": "EXPORT_LAG_SECONDS must be a whole number.",
    "SMTP_TIMEOUT_SECONDS": "SMTP_TIMEOUT_SECONDS must be a number.",
    "EXPORT_TIMEZONE": "EXPORT_TIMEZONE is not a known IANA time zone (e.g. UTC, Europe/Berlin, Asia/Dubai).",
}
URI_WITH_PASSWORD = f"mongodb://{MONGO_USER}:{quote(MONGO_PASSWORD, safe='')}@127.0.0.1:9/db"


@pytest.mark.parametrize("variable", ["SMTP_PORT", "EXPORT_TIMEZONE"])
def test_swapped_lines_name_the_variable_without_the_secret(variable, make_env, cli, smtp_server):
    for secret in (SWAPPED_SECRET, MONGO_PASSWORD):  # the SMTP password, and the one inside MONGODB_URI
        env = make_env(SMTP_PASSWORD=SWAPPED_SECRET, MONGODB_URI=URI_WITH_PASSWORD, **{variable: secret})
        result = cli(["export"], env=env)
        assert result.returncode == 2
        assert result.stderr.strip() == f"wa-export: {SWAPPED[variable]}"
        assert "***" not in result.stderr  # left out, not masked: nothing hints at its length or place


def test_every_echoing_setting_leaves_a_secret_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    for variable, expected in SWAPPED.items():
        for secret in (SWAPPED_SECRET, MONGO_PASSWORD, f"{MONGO_PASSWORD}/x"):  # equal to, or holding, a secret
            environ = {"SMTP_PASSWORD": SWAPPED_SECRET, "MONGODB_URI": URI_WITH_PASSWORD, variable: secret}
            _, problems = validate_environment(read_configuration(None, environ))
            assert [(p.variable, p.message) for p in problems] == [(variable, expected)], (variable, secret)
        # A value that is no secret is still quoted back, so a typo is easy to see.
        _, problems = validate_environment(read_configuration(None, {variable: "fifteen/x"}))
        assert "'fifteen/x'" in problems[0].message, variable


def test_a_missing_ca_file_is_named_with_home_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    _, problems = validate_environment(read_configuration(None, {"SMTP_CA_FILE": "~/missing-ca.pem"}))
    [problem] = [p for p in problems if p.variable == "SMTP_CA_FILE"]
    assert f"'{tmp_path / 'missing-ca.pem'}' does not exist or is not a file" in problem.message  # cron's ~ differs
