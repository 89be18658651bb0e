"""One table of settings rules: `config` and a run agree, numbers are bounded, near-misses are named.

In-process through Typer's CliRunner, with the process environment replaced by
make_env's (monkeypatch) and the working directory a fresh tmp_path (no stray
.env). A crash shows up as `result.exception`, which every test rules out.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from typer.testing import CliRunner, Result

from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.cli.app import app
from wa_export.errors import ExitCode
from wa_export.settings import RULES, probable_setting, read_configuration, validate_environment

WORKSPACE = "0123456789abcdef01234567"


def _invoke(monkeypatch: pytest.MonkeyPatch, cwd: Path, env: dict[str, str], args: list[str]) -> Result:
    """Run `wa-export ARGS` in this process with exactly `env` as the environment, in `cwd`."""
    for key in list(os.environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(cwd)
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stdout + result.stderr
    return result


def _without(env: dict[str, str], *names: str) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in names}


# (case id, changes to make_env's environment: None removes, variable the sentence must name)
MISCONFIGURATIONS: list[tuple[str, dict[str, str | None], str]] = [
    ("huge-lag", {"EXPORT_LAG_SECONDS": "1000000000000"}, "EXPORT_LAG_SECONDS"),
    ("huge-lease", {"EXPORT_LEASE_SECONDS": "1000000000000000"}, "EXPORT_LEASE_SECONDS"),
    ("huge-smtp-timeout", {"SMTP_TIMEOUT_SECONDS": "1e300"}, "SMTP_TIMEOUT_SECONDS"),
    ("nan-smtp-timeout", {"SMTP_TIMEOUT_SECONDS": "nan"}, "SMTP_TIMEOUT_SECONDS"),
    ("inf-mongo-timeout", {"MONGODB_TIMEOUT_SECONDS": "inf"}, "MONGODB_TIMEOUT_SECONDS"),
    ("nan-attachment", {"EXPORT_MAX_ATTACHMENT_MB": "nan"}, "EXPORT_MAX_ATTACHMENT_MB"),
    ("negative-attachment", {"EXPORT_MAX_ATTACHMENT_MB": "-5"}, "EXPORT_MAX_ATTACHMENT_MB"),
    ("negative-cleanup", {"EXPORT_CLEANUP_DAYS": "-1"}, "EXPORT_CLEANUP_DAYS"),
    ("huge-cleanup", {"EXPORT_CLEANUP_DAYS": "99999999999"}, "EXPORT_CLEANUP_DAYS"),
    ("nan-backfill", {"EXPORT_BACKFILL_MAX_HOURS": "nan"}, "EXPORT_BACKFILL_MAX_HOURS"),
    ("port", {"SMTP_PORT": "70000"}, "SMTP_PORT"),
    ("timezone", {"EXPORT_TIMEZONE": "Mars/Olympus_Mons"}, "EXPORT_TIMEZONE"),
    ("server-typo", {"SMTP_SERVER": None, "SMTP_SEVRER": "smtp.example.test"}, "SMTP_SERVER"),
    ("user-without-password", {"SMTP_PASSWORD": None}, "SMTP_PASSWORD"),
    ("password-without-user", {"SMTP_USERNAME": None}, "SMTP_USERNAME"),
    ("no-sender", {"SMTP_USERNAME": None, "SMTP_PASSWORD": None, "SMTP_FROM": None}, "SMTP_FROM"),
]


@pytest.mark.parametrize(
    ("changes", "variable"), [case[1:] for case in MISCONFIGURATIONS], ids=[case[0] for case in MISCONFIGURATIONS]
)
@pytest.mark.parametrize("command", ["config", "export"])
def test_config_and_a_run_refuse_the_same_settings(
    command, changes, variable, make_env, mongo_db, monkeypatch, tmp_path, smtp_server
):
    add_workspace(mongo_db, "Acme")  # a run gets as far as its SMTP checks
    env = make_env(**changes)
    result = _invoke(monkeypatch, tmp_path, env, [command])
    assert result.exit_code == ExitCode.USAGE, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if not line.startswith("wa-export: warning: ")]
    [sentence] = errors
    assert sentence.startswith("wa-export: ") and variable in sentence, sentence
    if command == "config":
        assert f"INVALID {variable}: " in result.stdout
    assert smtp_server.connection_count == 0


def test_a_misspelt_server_is_named_in_the_refusal(make_env, mongo_db, monkeypatch, tmp_path):
    add_workspace(mongo_db, "Acme")
    env = make_env(SMTP_SERVER=None, SMTP_SEVRER="smtp.example.test")
    result = _invoke(monkeypatch, tmp_path, env, ["export"])
    assert result.exit_code == ExitCode.USAGE
    assert result.stderr.splitlines()[-1] == (
        "wa-export: SMTP_SERVER is not set (SMTP_SEVRER is set: a typo?); "
        "set SMTP_SERVER to your mail server's host name."
    )


def test_an_out_of_range_value_names_the_range(make_env, monkeypatch, tmp_path):
    result = _invoke(monkeypatch, tmp_path, make_env(EXPORT_LAG_SECONDS="1000000000000"), ["export"])
    assert result.stderr.strip() == (
        "wa-export: EXPORT_LAG_SECONDS must be a whole number between 0 and 2592000 (30 days), got '1000000000000'."
    )


VALID_CONFIGURATIONS: list[tuple[str, dict[str, str | None]]] = [
    ("defaults", {}),
    (
        "largest-values",
        {
            "EXPORT_LAG_SECONDS": "2592000",
            "EXPORT_LEASE_SECONDS": "86400",
            "SMTP_TIMEOUT_SECONDS": "3600",
            "EXPORT_MAX_ATTACHMENT_MB": "1024",
            "EXPORT_CLEANUP_DAYS": "36500",
            "EXPORT_BACKFILL_MAX_HOURS": "8784",
        },
    ),
    (
        "smallest-values",
        {
            "EXPORT_LAG_SECONDS": "0",
            "EXPORT_LEASE_SECONDS": "5",
            "SMTP_TIMEOUT_SECONDS": "0.5",
            "EXPORT_MAX_ATTACHMENT_MB": "0.05",
            "EXPORT_BACKFILL_MAX_HOURS": "0",
        },
    ),
]


@pytest.mark.parametrize(
    "changes", [case[1] for case in VALID_CONFIGURATIONS], ids=[case[0] for case in VALID_CONFIGURATIONS]
)
@pytest.mark.parametrize("command", ["config", "export"])
def test_config_and_a_run_accept_the_same_settings(command, changes, make_env, mongo_db, monkeypatch, tmp_path):
    add_workspace(mongo_db, "Acme")
    result = _invoke(monkeypatch, tmp_path, make_env(**changes), [command])
    assert result.exit_code == ExitCode.OK, result.stdout + result.stderr


def test_a_server_without_login_is_valid_for_both(make_env, mongo_db, monkeypatch, tmp_path):
    # No SMTP_USERNAME and no SMTP_PASSWORD is a server that needs no login, not a problem.
    add_workspace(mongo_db, "Acme")
    env = make_env(SMTP_USERNAME=None, SMTP_PASSWORD=None, SMTP_FROM="exports@example.test")
    for command in ("config", "export"):
        result = _invoke(monkeypatch, tmp_path, env, [command])
        assert result.exit_code == ExitCode.OK, (command, result.stdout + result.stderr)


def test_an_invalid_workspace_address_alone_is_the_runs_verdict(make_env, mongo_db, monkeypatch, tmp_path):
    # A run fails that workspace (exit 1) and exports the others: config says the same, not exit 2.
    workspace_id = add_workspace(mongo_db, "Acme")
    add_messages(
        mongo_db, add_chat(mongo_db, workspace_id), [{"content": "hi", "timestamp": utcnow() - timedelta(minutes=2)}]
    )
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@acme.test, not an address"})
    config = _invoke(monkeypatch, tmp_path, env, ["config"])
    assert config.exit_code == ExitCode.FAILED, config.stdout + config.stderr
    assert f"INVALID WORKSPACE_{workspace_id}_EMAIL: " in config.stdout
    run = _invoke(monkeypatch, tmp_path, env, ["export"])
    assert run.exit_code == ExitCode.FAILED, run.stdout + run.stderr


@pytest.mark.parametrize("rule", [rule for rule in RULES if rule.bounds is not None], ids=lambda rule: rule.variable)
def test_every_number_setting_refuses_what_it_cannot_use(rule, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert rule.bounds is not None
    too_large = str(int(rule.bounds.maximum) * 10 + 1)
    # "1_000" and "١٠٠" (Arabic-Indic digits) are numbers to int() and float(), not to an operator reading a .env.
    for raw in ("nan", "inf", "-inf", "-1", too_large, "1e300", "9" * 40, "many", "1_000", "\u0661\u0660\u0660"):
        if raw == "-1" and rule.bounds.minimum < 0:
            continue
        settings, problems = validate_environment(
            read_configuration(None, {"MONGODB_URI": "mongodb://x", rule.variable: raw})
        )
        assert [problem.variable for problem in problems] == [rule.variable], (raw, problems)
        [problem] = problems
        assert problem.message.startswith(f"{rule.variable} must be "), problem.message
        assert getattr(settings, rule.field) == float(rule.default)  # the run never sees it
    # The maximum itself is accepted.
    upper = str(int(rule.bounds.maximum)) if rule.bounds.whole else f"{rule.bounds.maximum:g}"
    _, problems = validate_environment(read_configuration(None, {"MONGODB_URI": "mongodb://x", rule.variable: upper}))
    assert problems == []


# --- near-misses ------------------------------------------------------------------------------

NEAR_MISSES = {
    "EXPORT_TIMEZON": "EXPORT_TIMEZONE",
    "MONGO_URI": "MONGODB_URI",
    f"WORKSAPCE_{WORKSPACE}_EMAIL": f"WORKSPACE_{WORKSPACE}_EMAIL",
    f"WORKSPACE_{WORKSPACE}_EMAILS": f"WORKSPACE_{WORKSPACE}_EMAIL",
    "SMTP_SEVRER": "SMTP_SERVER",
    "smtp_port": "SMTP_PORT",
    "SMTP_HOST": "SMTP_SERVER",
}
UNRELATED = ["PATH", "HOME", "LANG", "HTTP_PORT", "TMP_DIR", "MAILTO", "WA_EXPORT_DEBUG", "EDITOR", "SHLVL"]


def test_near_miss_names_and_what_they_meant() -> None:
    assert {name: probable_setting(name) for name in NEAR_MISSES} == NEAR_MISSES
    assert {name: probable_setting(name) for name in UNRELATED} == dict.fromkeys(UNRELATED)
    for rule in RULES:  # a real setting is no near-miss of another
        assert probable_setting(rule.variable) is None
    assert probable_setting(f"WORKSPACE_{WORKSPACE}_EMAIL") is None


@pytest.mark.parametrize(
    "args",
    [["config"], ["export"], ["stats"], ["logs"], ["state"], ["health"], ["cleanup", "--dry-run"]],
    ids=lambda args: args[0],
)
def test_every_command_names_a_near_miss(args, make_env, mongo_db, monkeypatch, tmp_path):
    add_workspace(mongo_db, "Acme")
    env = make_env(
        EXPORT_TIMEZON="Asia/Kolkata",
        MONGO_URI="mongodb://elsewhere",
        HTTP_PORT="8080",
        **{f"WORKSAPCE_{WORKSPACE}_EMAIL": "ops@acme.test"},
    )
    result = _invoke(monkeypatch, tmp_path, env, args)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("wa-export: warning: ")]
    assert warnings == [
        "wa-export: warning: EXPORT_TIMEZON is not a wa-export setting and is ignored; did you mean EXPORT_TIMEZONE?",
        "wa-export: warning: MONGO_URI is not a wa-export setting and is ignored; did you mean MONGODB_URI?",
        f"wa-export: warning: WORKSAPCE_{WORKSPACE}_EMAIL is not a wa-export setting and is ignored; "
        f"did you mean WORKSPACE_{WORKSPACE}_EMAIL?",
    ], result.stderr
    for name in UNRELATED:
        assert name not in result.stderr


# --- a .env file others can read -----------------------------------------------------------------


def _env_file_warning(path: Path) -> str:
    return f"wa-export: warning: {path} holds a password and is readable by group or others; run chmod 600 {path}."


@pytest.mark.parametrize("holding", ["smtp-password", "uri-password"])
def test_a_readable_env_file_with_a_password_is_warned_about(
    holding, make_env, mongo_db, mongo_server_uri, monkeypatch, tmp_path
):
    add_workspace(mongo_db, "Acme")
    env_file = tmp_path / ".env"
    if holding == "smtp-password":
        env = make_env()
        env_file.write_text(f"SMTP_PASSWORD={env.pop('SMTP_PASSWORD')}\n")
    else:
        env = make_env(MONGODB_URI=None)
        uri = mongo_server_uri.replace("mongodb://", f"mongodb://nobody:{quote('Pw/1', safe='')}@", 1)
        env_file.write_text(f"MONGODB_URI={uri}\n")
    env_file.chmod(0o644)
    for args in (["config"], ["health"], ["export", "--dry-run"], ["export"]):
        result = _invoke(monkeypatch, tmp_path, env, args)
        assert _env_file_warning(env_file) in result.stderr.splitlines(), (args, result.stderr)
        assert "Pw/1" not in result.stdout + result.stderr

    env_file.chmod(0o600)
    for args in (["config"], ["health"], ["export"]):
        assert "chmod 600" not in _invoke(monkeypatch, tmp_path, env, args).stderr


def test_a_readable_env_file_without_a_secret_is_fine(make_env, monkeypatch, tmp_path):
    env_file = tmp_path / "wa.env"
    env_file.write_text("EXPORT_TIMEZONE=Asia/Kolkata\nMONGODB_URI=mongodb://127.0.0.1:27017/platform\n")
    env_file.chmod(0o644)
    env: dict[str, Any] = make_env(EXPORT_TIMEZONE=None, MONGODB_URI=None)
    result = _invoke(monkeypatch, tmp_path, env, ["--env-file", str(env_file), "config"])
    assert result.exit_code == ExitCode.OK, result.stdout + result.stderr
    assert "chmod" not in result.stderr


def test_workers_say_a_near_miss_once(make_env, mongo_db, cli):
    # --workers children share the parent's stderr (a subprocess: the children are the point).
    add_workspace(mongo_db, "Acme")
    add_workspace(mongo_db, "Beta")
    result = cli(["export", "--workers", "2"], env=make_env(EXPORT_TIMEZON="UTC"))
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert result.stderr.count("EXPORT_TIMEZON is not a wa-export setting") == 1, result.stderr


@pytest.mark.parametrize(
    ("written", "advice"),
    [("localtime", "e.g. UTC"), ("posixrules", "e.g. UTC"), ("Factory", "e.g. UTC"), ("utc", "did you mean UTC?")],
)
def test_zone_database_files_that_are_not_zones_are_refused(written, advice, tmp_path, monkeypatch):
    # "localtime" is whatever the host's zone is: emails would say "localtime" and mean anything.
    monkeypatch.chdir(tmp_path)
    _, problems = validate_environment(
        read_configuration(None, {"MONGODB_URI": "mongodb://x", "EXPORT_TIMEZONE": written})
    )
    [problem] = problems
    assert problem.variable == "EXPORT_TIMEZONE" and advice in problem.message, problem.message
