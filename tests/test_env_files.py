"""`.env` files: as Windows editors save them, unreadable, with a typo, or missing altogether.

Runs the installed CLI in a directory holding the `.env` under test (the CLI
reads ./.env), with the rest of the configuration in the real environment.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

from helpers import mailed_contents, parse_json
from inprocess_cli import run_wa_export
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.errors import ExitCode

# The file holds what an operator keeps there; the environment (make_env) the test servers.
FILE_TEXT = "EXPORT_TIMEZONE=Asia/Kolkata\r\nEXPORT_CLEANUP_DAYS=3\r\n"


def _config(cwd: Path, env: dict[str, str], *args: str) -> dict[str, dict[str, str]]:
    result = run_wa_export(["config", "--json", *args], env, cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return {line["variable"]: line for line in parse_json(result)["settings"]}


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.encode("utf-16"),  # Notepad "Unicode": UTF-16 LE with a BOM
        lambda text: b"\xfe\xff" + text.encode("utf-16-be"),  # "Unicode big endian"
        lambda text: b"\xef\xbb\xbf" + text.encode("utf-8"),  # "UTF-8 with BOM"
    ],
    ids=["utf-16-le-bom", "utf-16-be-bom", "utf-8-bom"],
)
def test_windows_encodings_are_read(encode, make_env, tmp_path):
    (tmp_path / ".env").write_bytes(encode(FILE_TEXT))
    env = make_env(EXPORT_TIMEZONE=None, EXPORT_CLEANUP_DAYS=None)
    settings = _config(tmp_path, env)
    # The first line counts too: a BOM glued to its name used to hide it.
    assert settings["EXPORT_TIMEZONE"]["value"] == "Asia/Kolkata"
    assert settings["EXPORT_TIMEZONE"]["source"] == f".env file {tmp_path / '.env'}"
    assert settings["EXPORT_CLEANUP_DAYS"]["value"] == "3"


def test_a_run_uses_a_utf16_env_file(mongo_db, make_env, tmp_path, smtp_server):
    workspace_id = add_workspace(mongo_db, "Windows Admin")
    add_messages(
        mongo_db,
        add_chat(mongo_db, workspace_id),
        [{"content": "from notepad", "timestamp": utcnow() - timedelta(minutes=2)}],
    )
    (tmp_path / ".env").write_bytes(f"WORKSPACE_{workspace_id}_EMAIL=ops@windows.test\r\n".encode("utf-16"))
    result = run_wa_export(["export"], make_env(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [["ops@windows.test"]]
    assert mailed_contents(smtp_server.messages) == ["from notepad"]


def test_unreadable_env_file_is_one_sentence(make_env, tmp_path):
    # /proc/self/mem (Linux) is a regular file that nobody can read from offset 0,
    # root included (tests may run as root, for whom chmod 000 changes nothing).
    (tmp_path / ".env").symlink_to("/proc/self/mem")
    for args in (["export"], ["health"], ["config"], ["export", "--json"]):
        result = run_wa_export(args, make_env(), tmp_path)
        assert result.returncode == ExitCode.USAGE, (args, result.stdout, result.stderr)
        [line] = result.stderr.strip().splitlines()
        assert line.startswith(f"wa-export: Cannot read the env file {tmp_path / '.env'} (")
        assert "╭" not in result.stderr and "Traceback" not in result.stderr and "Usage:" not in result.stderr
        if "--json" in args:
            assert parse_json(result)["exit_code"] == 2
        else:
            assert result.stdout == ""


def test_env_file_that_is_not_text_is_one_sentence(make_env, tmp_path):
    env_file = tmp_path / "latin1.env"
    env_file.write_bytes("EXPORT_TIMEZONE=UTC\nSMTP_FROM=caf\xe9@example.test\n".encode("latin-1"))
    result = run_wa_export(["--env-file", str(env_file), "export"], make_env(), tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            f"wa-export: The env file {env_file} is not valid UTF-8 text (line 2); "
            "save it as UTF-8 (or UTF-16 with a byte-order mark)."
        )
    ]


def test_a_garbage_line_is_named_and_the_rest_still_read(mongo_db, make_env, tmp_path):
    add_workspace(mongo_db, "Acme")  # `logs` reads the platform's database
    secret_looking = "Hunter2-Passw0rd"
    (tmp_path / ".env").write_text(
        f"EXPORT_CLEANUP_DAYS=3\nthis line is {secret_looking}\nEXPORT_TIMEZONE=Asia/Kolkata\nSMTP_TLS\n"
    )
    env = make_env(EXPORT_TIMEZONE=None, EXPORT_CLEANUP_DAYS=None)
    result = run_wa_export(["config", "--json"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    settings = {line["variable"]: line for line in parse_json(result)["settings"]}
    assert settings["EXPORT_TIMEZONE"]["value"] == "Asia/Kolkata"  # the line after the garbage counts
    assert settings["EXPORT_CLEANUP_DAYS"]["value"] == "3"
    warnings = result.stderr.strip().splitlines()
    assert warnings == [
        f"wa-export: warning: {tmp_path / '.env'} line 2 is not NAME=value and was ignored.",
        f"wa-export: warning: {tmp_path / '.env'} line 4 sets SMTP_TLS without '=' and was ignored.",
    ]
    assert secret_looking not in result.stdout + result.stderr  # the line itself is never printed

    # Every command says it (stderr, so under cron it reaches the log), not only `config`.
    logs = run_wa_export(["logs"], env, tmp_path)
    assert logs.returncode == 0, logs.stderr
    assert f"{tmp_path / '.env'} line 2 is not NAME=value" in logs.stderr


def test_no_configuration_at_all_is_said_before_connecting(mongo_db, make_env, tmp_path):
    add_workspace(mongo_db, "Acme")  # for the last, configured `logs`
    env = make_env(MONGODB_URI=None, MONGODB_DATABASE=None, MONGODB_TIMEOUT_SECONDS="0.5")
    result = run_wa_export(["logs"], env, tmp_path)
    # Whether or not something answers on localhost, the first line says where the settings were looked for.
    assert result.returncode in (ExitCode.OK, ExitCode.MONGO_UNAVAILABLE), result.stderr
    first = result.stderr.splitlines()[0]
    assert first == (
        f"wa-export: warning: no .env file in {tmp_path} and no MONGODB_URI in the environment: "
        "using mongodb://localhost:27017 (set MONGODB_URI, or pass --env-file)."
    )

    # A .env file (even one without MONGODB_URI) or MONGODB_URI alone is configuration: no such line.
    (tmp_path / ".env").write_text("EXPORT_TIMEZONE=UTC\n")
    quiet = run_wa_export(["logs"], env, tmp_path)
    assert "no .env file" not in quiet.stderr
    os.unlink(tmp_path / ".env")
    configured = run_wa_export(["logs"], make_env(MONGODB_TIMEOUT_SECONDS="0.5"), tmp_path)
    assert configured.returncode == 0 and configured.stderr == ""


def test_a_directory_named_env_is_not_a_settings_file(make_env, tmp_path):
    # `python -m venv .env` is common: that directory must neither be read nor be an error.
    (tmp_path / ".env").mkdir()
    result = run_wa_export(["config"], make_env(), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no .env file" in result.stdout
