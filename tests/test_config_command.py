"""`wa-export config`: effective settings with their origin, masked secrets, every invalid value, exit 2.

The installed CLI, as a CI smoke run or an operator uses it before enabling the
timer. It must not touch MongoDB or SMTP: both point at loopback listeners that
would see any connection attempt.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

import wa_export.settings as settings_module
from helpers import parse_json, setting_variables
from inprocess_cli import run_wa_export

MONGO_SECRET = "Cfg-Mongo_Pw4471"
SMTP_SECRET = "Cfg-Smtp_Pw8820"
WORKSPACE = "64ab00000000000000000001"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A loopback port that accepts nothing by itself: a pending connection means someone tried."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.3)
    try:
        yield server
    finally:
        server.close()


def _nobody_connected(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        return True
    connection.close()
    return False


def _env(make_env: Any, listener: socket.socket, **overrides: Any) -> dict[str, str]:
    port = listener.getsockname()[1]
    uri = f"mongodb://exporter:{quote(MONGO_SECRET, safe='')}@127.0.0.1:{port}/platform?authSource=admin"
    defaults = {
        "MONGODB_URI": uri,
        "MONGODB_DATABASE": None,
        "SMTP_SERVER": "127.0.0.1",
        "SMTP_PORT": str(port),
        "SMTP_PASSWORD": SMTP_SECRET,
    }
    return make_env(**{**defaults, **overrides})


def _by_variable(document: dict[str, Any], key: str = "settings") -> dict[str, dict[str, Any]]:
    return {line["variable"]: line for line in document[key]}


def test_valid_configuration_with_sources_and_masked_secrets(make_env, listener, tmp_path):
    env_file = tmp_path / "wa.env"
    env_file.write_text(f"EXPORT_TIMEZONE=Asia/Kolkata\nWORKSPACE_{WORKSPACE}_EMAIL=ops@acme.test, it@acme.test\n")
    env = _env(make_env, listener, EXPORT_TIMEZONE=None, EXPORT_LAG_SECONDS="30")

    result = run_wa_export(["--env-file", str(env_file), "config", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    assert document["ok"] is True and document["problems"] == [] and document["env_file"] == str(env_file)
    settings = _by_variable(document)
    assert list(settings) == setting_variables()
    assert settings["EXPORT_TIMEZONE"] == {
        "variable": "EXPORT_TIMEZONE",
        "value": "Asia/Kolkata",
        "source": f".env file {env_file}",
        "valid": True,
        "problem": None,
    }
    assert settings["EXPORT_LAG_SECONDS"]["source"] == "environment" and settings["EXPORT_LAG_SECONDS"]["value"] == "30"
    assert settings["EXPORT_INTERVAL_MINUTES"]["source"] == "default"
    assert settings["EXPORT_INTERVAL_MINUTES"]["value"] == "15"
    assert settings["MONGODB_DATABASE"]["value"] == "platform"
    assert settings["MONGODB_DATABASE"]["source"] == "default (from MONGODB_URI)"
    assert settings["SMTP_PASSWORD"]["value"] == "********"
    assert "***" in settings["MONGODB_URI"]["value"] and "authSource=admin" in settings["MONGODB_URI"]["value"]
    assert _by_variable(document, "workspace_addresses")[f"WORKSPACE_{WORKSPACE}_EMAIL"]["value"] == (
        "ops@acme.test, it@acme.test"
    )

    plain = run_wa_export(["--env-file", str(env_file), "config"], env, tmp_path)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert re.search(r"^EXPORT_TIMEZONE +Asia/Kolkata +\.env file \S+wa\.env +ok$", plain.stdout, re.MULTILINE)
    assert re.search(rf"^WORKSPACE_{WORKSPACE}_EMAIL +ops@acme\.test, it@acme\.test ", plain.stdout, re.MULTILINE)
    assert plain.stdout.splitlines()[-1].startswith("configuration valid: ")
    for text in (result.stdout, result.stderr, plain.stdout, plain.stderr):
        for secret in (MONGO_SECRET, quote(MONGO_SECRET, safe=""), SMTP_SECRET):
            assert secret not in text
    assert _nobody_connected(listener)  # neither MongoDB nor SMTP was contacted


def test_every_invalid_value_is_listed_and_exits_2(make_env, listener, tmp_path):
    malformed = f"WORKSPACE_{WORKSPACE[:-2]}zz_EMAIL"
    env = _env(
        make_env,
        listener,
        SMTP_PORT="five-eight-seven",
        EXPORT_TIMEZONE="Mars/Olympus_Mons",
        EXPORT_LAG_SECONDS="-1",
        SMTP_SECURITY="tls",
        EXPORT_TIMEZON="UTC",  # a typo: warned about, not an error
        **{f"WORKSPACE_{WORKSPACE}_EMAIL": "ops@acme.test, not an address", malformed: "ops@acme.test"},
    )
    result = run_wa_export(["config", "--json"], env, tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    document = parse_json(result)
    assert document["ok"] is False and document["exit_code"] == 2
    invalid = [problem["variable"] for problem in document["problems"]]
    assert invalid == [
        "SMTP_PORT",
        "SMTP_SECURITY",
        "EXPORT_TIMEZONE",
        "EXPORT_LAG_SECONDS",
        f"WORKSPACE_{WORKSPACE}_EMAIL",
        malformed,
    ]
    assert document["unknown_variables"] == ["EXPORT_TIMEZON"]
    settings = _by_variable(document)
    assert settings["SMTP_PORT"]["value"] == "five-eight-seven" and settings["SMTP_PORT"]["valid"] is False
    assert "whole number" in settings["SMTP_PORT"]["problem"]

    plain = run_wa_export(["config"], env, tmp_path)
    assert plain.returncode == 2
    for variable in invalid:
        assert len([line for line in plain.stdout.splitlines() if line.startswith(f"INVALID {variable}: ")]) == 1
    assert "WARNING EXPORT_TIMEZON is not a wa-export setting" in plain.stdout
    # stderr: the near-miss warning every command gives, then the one sentence.
    warning, sentence = plain.stderr.strip().splitlines()
    assert warning == (
        "wa-export: warning: EXPORT_TIMEZON is not a wa-export setting and is ignored; did you mean EXPORT_TIMEZONE?"
    )
    assert sentence.startswith("wa-export: 6 settings are invalid (SMTP_PORT, SMTP_SECURITY, EXPORT_TIMEZONE")
    # A run stops on the first one, says how many more there are and where to see them.
    run = run_wa_export(["export"], env, tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == (
        "wa-export: SMTP_PORT must be a whole number, got 'five-eight-seven'; 3 more settings are invalid "
        "(`wa-export config` lists them all)."
    )
    assert _nobody_connected(listener)


def test_a_password_in_the_wrong_variable_is_masked(make_env, listener, tmp_path):
    env = _env(make_env, listener, SMTP_PORT=SMTP_SECRET, EXPORT_DIR=MONGO_SECRET)  # swapped .env lines
    result = run_wa_export(["config"], env, tmp_path)
    assert result.returncode == 2
    assert SMTP_SECRET not in result.stdout + result.stderr and MONGO_SECRET not in result.stdout + result.stderr
    assert "INVALID SMTP_PORT: must be a whole number." in result.stdout.splitlines()


def test_an_unreadable_uri_is_shown_without_its_password(make_env, listener, tmp_path):
    # Invalid, it is shown as written (so the operator sees what to fix): its password still is not.
    env = _env(make_env, listener, MONGODB_URI=f"mongodb://exporter:{MONGO_SECRET}@x@127.0.0.1/platform")
    result = run_wa_export(["config", "--json"], env, tmp_path)
    assert result.returncode == 2
    uri = _by_variable(parse_json(result))["MONGODB_URI"]
    assert uri["valid"] is False and "percent-encode" in uri["problem"]
    assert uri["value"] == "mongodb://exporter:***@127.0.0.1/platform"
    assert MONGO_SECRET not in result.stdout + result.stderr


def test_every_variable_the_settings_read_is_listed() -> None:
    # A setting added to settings.py without a Settings field (or under another name) would be
    # missing from `wa-export config`: every variable named there must be listed.
    source = Path(settings_module.__file__).read_text()
    named = set(re.findall(r'"((?:MONGODB|SMTP|EXPORT)_[A-Z_]+)"', source))
    assert named and named <= set(setting_variables()), named - set(setting_variables())
