"""One wording per finding, wherever it is reported, and reasons short enough to read.

A stray or malformed WORKSPACE_<ID>_<SUFFIX> reads the same in `config`, a run's warnings and `health`,
naming the variable as written; `health` reasons name the first offender and count the rest (--json has
them all); EXPORT_DIR being a file reads the same in `cleanup` and `health`; an address-less workspace's
warning says what scheduled runs will not send.
"""

from __future__ import annotations

import re
import socket
from datetime import timedelta

from bson import ObjectId

from helpers import health_checks, lines_with, one_stderr_line, parse_json
from seeding import add_chat, add_messages, add_workspace, utcnow

NESTED_PARENTHESES = re.compile(r"\([^)]*\(")
UNSENT = "scheduled runs will not send the messages that arrive while a workspace has no address"


def test_stray_and_malformed_variables_read_the_same_everywhere(mongo_db, make_env, cli, smtp_server):
    active = add_workspace(mongo_db, "Active")
    stray = f"WORKSPACE_{ObjectId()}_SCHEDULE"
    malformed = "WORKSPACE_nothex_TIMEZONE"
    env = make_env(**{f"WORKSPACE_{active}_EMAIL": "ops@active.test", stray: "hourly", malformed: "UTC"})
    advice = "write a workspace id (24 hexadecimal characters) between WORKSPACE_ and _TIMEZONE"
    malformed_sentence = f"{malformed} applies to no workspace; {advice}"
    stray_sentence = f"{stray} matches no active workspace in database {mongo_db.name!r}"

    config = parse_json(cli(["config", "--json"], env=env))
    [line] = [line for line in config["workspace_addresses"] if line["variable"] == malformed]
    assert line["problem"] == malformed_sentence + "."
    assert f"INVALID {malformed}: applies to no workspace; {advice}." in cli(["config"], env=env).stdout.splitlines()

    run = cli(["export"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert malformed_sentence in lines_with(run.stdout, " WARNING ", malformed)[0]
    assert stray_sentence in lines_with(run.stdout, " WARNING ", stray)[0]

    reason = health_checks(cli(["health", "--json"], env=env))["workspace_addresses"]["reason"]
    assert malformed_sentence in reason and stray_sentence in reason
    assert "_EMAIL is set" not in reason  # the stray variable is a _SCHEDULE one


def test_config_names_an_invalid_variable_once(make_env, cli):
    variable = f"WORKSPACE_{ObjectId()}_EMAIL"
    result = cli(["config"], env=make_env(**{variable: "not an address"}))
    [line] = lines_with(result.stdout, "INVALID ")
    assert line.startswith(f"INVALID {variable}: contains an invalid email address 'not an address'"), line
    assert line.count(variable) == 1


def test_health_address_reason_names_the_first_and_counts_the_rest(mongo_db, make_env, cli, smtp_server):
    bare = [add_workspace(mongo_db, f"Bare Tenant Number {n}") for n in range(12)]
    broken = [add_workspace(mongo_db, f"Broken Tenant {n}") for n in range(3)]
    strays = {f"WORKSPACE_{ObjectId()}_EMAIL": "ops@gone.test" for _ in range(4)}
    env = make_env(**{f"WORKSPACE_{w}_EMAIL": "not an address" for w in broken}, **strays)

    check = health_checks(cli(["health", "--json"], env=env))["workspace_addresses"]
    reason = check["reason"]
    assert check["status"] == "failed"
    assert f"Bare Tenant Number 0 ({bare[0]}) and 11 more" in reason
    assert f"3 workspaces fail every export for a refused address, first Broken Tenant 0 ({broken[0]})" in reason
    assert f"{min(strays)} and 3 more match no active workspace" in reason
    assert not any(str(w) in reason for w in bare[1:] + broken[1:])
    assert not NESTED_PARENTHESES.search(reason), reason
    assert len(reason) < 800, (len(reason), reason)  # four findings, each its first offender
    assert reason.endswith(".") and not re.search(r"\.\s+[A-Z]", reason)  # one sentence
    assert len(check["details"]["missing"]) == 12 and len(check["details"]["refused"]) == 3


def test_health_failed_exports_reason_names_the_first_and_counts_the_rest(mongo_db, make_env, cli, smtp_server):
    failing = [add_workspace(mongo_db, f"Failing {n}") for n in range(3)]
    now = utcnow()
    mongo_db.export_logs.insert_many(
        [
            {
                "workspace_id": str(workspace),
                "workspace_name": f"Failing {n}",
                "status": "failed",
                "created_at": now - timedelta(minutes=5 + n),
                "error_message": "the server said no",
            }
            for n, workspace in enumerate(failing)
        ]
    )
    reason = health_checks(cli(["health", "--json"], env=make_env()))["failed_exports"]["reason"]
    assert "3 workspaces still failing, first Failing 0" in reason and "the server said no" in reason, reason
    assert "Failing 1" not in reason and "Failing 2" not in reason
    assert not NESTED_PARENTHESES.search(reason), reason


def test_export_dir_that_is_a_file_reads_the_same_in_cleanup_and_health(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Any")
    a_file = tmp_path / "afile"
    a_file.write_text("not a folder")
    env = make_env(EXPORT_DIR=str(a_file))

    reason = health_checks(cli(["health", "--json"], env=env))["export_dir"]["reason"]
    assert reason == f"EXPORT_DIR {a_file} is not a directory; point EXPORT_DIR at a directory."
    cleanup = cli(["cleanup", "--days", "7"], env=env)
    assert cleanup.returncode == 2
    assert one_stderr_line(cleanup.stderr).endswith(reason)


def test_test_email_json_gives_the_advice_once(cli, make_env, smtp_server):
    with socket.socket() as closed:  # a port nothing listens on once closed
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result = cli(["test-email", "--to", "ops@example.com", "--json"], env=make_env(SMTP_PORT=str(port)))
    document = parse_json(result)
    assert result.returncode == 1 and document["step"] == "connect"
    assert "check SMTP_SERVER/SMTP_PORT" in document["error"]
    assert "hint" not in document
    assert sum(str(value).lower().count("check smtp_server/smtp_port") for value in document.values()) == 1


def test_a_missing_address_says_what_scheduled_runs_will_not_send(mongo_db, make_env, cli, smtp_server):
    bare = add_workspace(mongo_db, "Bare")
    add_messages(mongo_db, add_chat(mongo_db, bare), [{"timestamp": utcnow() - timedelta(minutes=2)}])
    env = make_env()
    run = cli(["export"], env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    [warning] = lines_with(run.stdout, " WARNING ", "has no email address")
    assert UNSENT in warning and "--since" in warning
    reason = health_checks(cli(["health", "--json"], env=env))["workspace_addresses"]["reason"]
    assert UNSENT in reason and "--since" in reason
