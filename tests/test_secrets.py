"""Passwords never leak; a path-like subject or body is never attached.

The leak tests run the installed CLI against a MongoDB that requires a password
(LocalMongoServer with users) and an SMTP server with its own password, in
success and in failures, and greps stdout, stderr, export_logs, system_logs,
export_state and the raw mails for every form of both secrets.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from bson import json_util

from faultkit import AuthMongoServer
from helpers import (
    MONGO_SECRET,
    SMTP_SECRET,
    WRONG_SECRETS,
    assert_no_secret,
    attachments,
    mailed_contents,
    parse_json,
    plain_body,
)
from seeding import add_chat, add_messages, add_workspace, utcnow
from servers import LocalSmtpServer, free_port
from wa_export.mail.message import OutgoingMail
from wa_export.mail.transport import MailSender
from wa_export.settings import load_settings

SMTP_USER = "wa-export"
MONGO_USER = "wa_export"


@pytest.fixture(scope="module")
def mongo_login() -> tuple[str, str]:
    """faultkit's auth_mongo, with a password that a URI must encode."""
    return MONGO_USER, MONGO_SECRET


@pytest.fixture
def secret_smtp() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer(tls="starttls", username=SMTP_USER, password=SMTP_SECRET) as server:
        yield server


def _env(
    make_env: Any, auth_mongo: AuthMongoServer, db: Any, smtp: LocalSmtpServer, **overrides: Any
) -> dict[str, str]:
    settings: dict[str, Any] = {
        "MONGODB_URI": auth_mongo.auth_uri,
        "MONGODB_DATABASE": db.name,
        "MONGODB_TIMEOUT_SECONDS": "3",
        "SMTP_PORT": str(smtp.port),
        "SMTP_CA_FILE": str(smtp.ca_cert_path),
        "SMTP_USERNAME": SMTP_USER,
        "SMTP_PASSWORD": SMTP_SECRET,
        "SMTP_TIMEOUT_SECONDS": "5",
    }
    settings.update(overrides)
    return make_env(**settings)


def _seed(db: Any, count: int = 2) -> dict[str, str]:
    recipients = {}
    for index in range(count):
        workspace_id = add_workspace(db, f"Secret Tenant {index}")
        add_messages(
            db,
            add_chat(db, workspace_id),
            [
                {"content": f"message {index}", "timestamp": utcnow() - timedelta(minutes=2)},
            ],
        )
        recipients[f"WORKSPACE_{workspace_id}_EMAIL"] = f"ops{index}@tenant{index}.test"
    return recipients


def _assert_nothing_leaked(result: Any, db: Any = None, smtp: LocalSmtpServer | None = None) -> None:
    assert_no_secret("stdout", result.stdout)
    assert_no_secret("stderr", result.stderr)
    if db is not None:
        for collection in ("export_logs", "system_logs", "export_state"):
            for document in db[collection].find():
                assert_no_secret(collection, json_util.dumps(document))
    if smtp is not None:
        for mail in smtp.messages:
            assert_no_secret("email", mail.data)


# --- successful runs -------------------------------------------------------------------------


def test_success_runs_never_show_the_passwords(make_env, auth_mongo, fdb, secret_smtp, cli):
    recipients = _seed(fdb)
    env = _env(make_env, auth_mongo, fdb, secret_smtp, **recipients)
    cmdline = Path(f"/proc/{auth_mongo.pid}/cmdline")
    if cmdline.exists():  # the test server's password is not in its argv (visible in `ps`)
        assert_no_secret("mongo server argv", cmdline.read_bytes().replace(b"\0", b" "))

    plain = cli(["export"], env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert plain.stderr == ""
    assert len(secret_smtp.wait_for_messages(2, timeout=10)) == 2
    assert secret_smtp.auth_successes == 1 and secret_smtp.auth_failures == 0
    assert fdb.export_logs.count_documents({"status": "completed"}) == 2
    _assert_nothing_leaked(plain, fdb, secret_smtp)

    for workspace in fdb.workspaces.find():
        add_messages(
            fdb,
            fdb.chats.find_one({"workspace_id": workspace["_id"]})["_id"],
            [{"content": "later", "timestamp": utcnow()}],
        )
    as_json = cli(["export", "--json"], env=env)
    assert as_json.returncode == 0, as_json.stdout + as_json.stderr
    assert parse_json(as_json)["ok"] is True
    manual = cli(["export", "--hours", "1", "--email", "boss@tenant0.test"], env=env)
    assert manual.returncode == 0, manual.stdout + manual.stderr
    assert len(secret_smtp.wait_for_messages(6, timeout=10)) == 6
    for result in (as_json, manual):
        _assert_nothing_leaked(result, fdb, secret_smtp)
    assert sorted(mailed_contents(secret_smtp.messages[:2])) == ["message 0", "message 1"]


# --- SMTP failures ---------------------------------------------------------------------------


SMTP_FAILURES = ["auth_refused", "connection_refused", "dropped_during_data", "recipient_refused", "untrusted_ca"]


@pytest.mark.parametrize("failure", SMTP_FAILURES)
def test_smtp_failures_never_show_the_passwords(failure, make_env, auth_mongo, fdb, cli):
    recipients = _seed(fdb, count=1)
    overrides: dict[str, Any] = dict(recipients)
    server_options: dict[str, Any] = {}
    if failure == "auth_refused":
        overrides["SMTP_PASSWORD"] = WRONG_SECRETS[0]
    elif failure == "dropped_during_data":
        server_options["drop_connection_during_data"] = True
    elif failure == "recipient_refused":
        server_options["refuse_recipients"] = {"ops0@tenant0.test"}
    with LocalSmtpServer(tls="starttls", username=SMTP_USER, password=SMTP_SECRET, **server_options) as smtp:
        if failure == "connection_refused":
            overrides["SMTP_PORT"] = str(free_port())
        if failure == "untrusted_ca":
            overrides["SMTP_CA_FILE"] = None
        env = _env(make_env, auth_mongo, fdb, smtp, **overrides)
        args = ["export", "--json"] if SMTP_FAILURES.index(failure) % 2 else ["export"]
        result = cli(args, env=env)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        _assert_nothing_leaked(result, fdb, smtp)
        assert smtp.messages == []
    [log] = list(fdb.export_logs.find())
    assert log["status"] == "failed" and log["error_message"]
    assert fdb.system_logs.count_documents({"kind": "export_run", "event_type": "error"}) == 1


# --- MongoDB failures ------------------------------------------------------------------------


def test_unreachable_mongodb_with_password_in_uri(make_env, cli, smtp_server):
    port = free_port()  # nothing listens there
    uri = f"mongodb://{MONGO_USER}:{quote(MONGO_SECRET, safe='')}@127.0.0.1:{port}/whatsapp?directConnection=true"
    env = make_env(MONGODB_URI=uri, MONGODB_TIMEOUT_SECONDS="1", SMTP_PASSWORD=SMTP_SECRET)
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert parse_json(result)["exit_code"] == 3
    assert "MongoDB" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _assert_nothing_leaked(result)


def test_mongodb_refusing_the_password(make_env, auth_mongo, fdb, cli, smtp_server):
    _seed(fdb, count=1)
    wrong = auth_mongo.uri_for(MONGO_USER, WRONG_SECRETS[1])
    env = make_env(MONGODB_URI=wrong, MONGODB_DATABASE=fdb.name, MONGODB_TIMEOUT_SECONDS="2", SMTP_PASSWORD=SMTP_SECRET)
    result = cli(["export"], env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "MONGODB_URI" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    _assert_nothing_leaked(result, fdb)
    assert smtp_server.connection_count == 0


# --- bad configuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        {"MONGODB_URI": f"mongodb://{MONGO_USER}:{quote(MONGO_SECRET, safe='')}@127.0.0.1:notaport/"},
        {"MONGODB_URI": f"mongodb://{MONGO_USER}:{MONGO_SECRET}@127.0.0.1:27017/"},  # "/" unencoded
        {"MONGODB_URI": f"http://{MONGO_USER}:{quote(MONGO_SECRET, safe='')}@127.0.0.1/"},
        # Swapped lines in a .env: the password lands where a value is echoed back.
        {"SMTP_PORT": SMTP_SECRET},
        {"EXPORT_TIMEZONE": SMTP_SECRET},
        {"MONGODB_DATABASE": MONGO_SECRET},
    ],
    ids=["uri-bad-port", "uri-unencoded", "uri-bad-scheme", "port", "timezone", "database"],
)
def test_bad_config_never_echoes_a_secret(overrides, make_env, cli, smtp_server):
    uri = f"mongodb://{MONGO_USER}:{quote(MONGO_SECRET, safe='')}@127.0.0.1:{free_port()}/?directConnection=true"
    env = make_env(**{"MONGODB_URI": uri, "SMTP_PASSWORD": SMTP_SECRET, **overrides})
    variable = next(iter(overrides))
    result = cli(["export", "--json"] if variable == "SMTP_PORT" else ["export"], env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert variable in result.stderr
    _assert_nothing_leaked(result)


# --- a path-like subject or body is text, never an attachment ---------------------------------


def test_subject_equal_to_an_existing_path_is_not_attached(secret_smtp, tmp_path, monkeypatch):
    secret_file = tmp_path / "private.txt"
    secret_file.write_text("PRIVATE FILE CONTENT 4711")
    for key in list(os.environ):
        if key.startswith(("MONGODB_", "SMTP_", "EXPORT_", "WORKSPACE_")):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        environ={
            "SMTP_SERVER": secret_smtp.host,
            "SMTP_PORT": str(secret_smtp.port),
            "SMTP_USERNAME": SMTP_USER,
            "SMTP_PASSWORD": SMTP_SECRET,
            "SMTP_FROM": "exports@wa-export.test",
            "SMTP_SECURITY": "starttls",
            "SMTP_CA_FILE": str(secret_smtp.ca_cert_path),
        }
    )
    with MailSender(settings) as sender:
        sender.send(OutgoingMail(to=("ops@example.com",), subject=str(secret_file), body="just a body"))
        sender.send(OutgoingMail(to=("ops@example.com",), subject="s", body=str(secret_file)))
        sender.send(OutgoingMail(to=("ops@example.com",), subject="private.txt", body="private.txt"))  # relative
    mails = secret_smtp.wait_for_messages(3, timeout=5)
    for mail in mails:
        message = mail.message()
        assert list(message.iter_attachments()) == []
        assert b"PRIVATE FILE CONTENT" not in mail.data
        assert b"UFJJVkFURSBGSUxFIENPTlRFTlQ" not in mail.data  # base64 of the content
    assert str(mails[0].message()["Subject"]).strip() == str(secret_file)
    assert plain_body(mails[0].message()).strip() == "just a body"
    assert plain_body(mails[1].message()).strip() == str(secret_file)


def test_workspace_named_like_an_existing_file_gets_only_its_workbook(mongo_db, make_env, cli, smtp_server, tmp_path):
    secret_file = tmp_path / "private.txt"
    secret_file.write_text("PRIVATE FILE CONTENT 4711")
    workspace_id = add_workspace(mongo_db, str(secret_file))
    add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": "hello", "timestamp": utcnow()}])
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@files.test"})
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [mail] = smtp_server.wait_for_messages(1, timeout=5)
    message = mail.message()
    assert str(secret_file) in str(message["Subject"]).replace("\n", "")
    assert str(secret_file) in plain_body(message)
    parts = attachments(message)
    assert len(parts) == 1 and parts[0][0].endswith(".xlsx")
    assert b"PRIVATE FILE CONTENT" not in mail.data and b"UFJJVkFURSBGSUxFIENPTlRFTlQ" not in mail.data
    [workspace] = json.loads(result.stdout)["workspaces"]
    file_path = Path(workspace["file_path"])
    assert file_path.is_relative_to(Path(env["EXPORT_DIR"])) and secret_file.read_text() == "PRIVATE FILE CONTENT 4711"
    assert mailed_contents([mail]) == ["hello"]
