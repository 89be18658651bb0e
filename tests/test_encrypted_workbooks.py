"""Password-protected workbooks through the CLI: where the password comes from, what is encrypted, where it never is.

A workspace with a password (WORKSPACE_<ID>_WORKBOOK_PASSWORD, else the document field that
EXPORT_WORKBOOK_PASSWORD_FIELD names) gets its kept workbook and its attachment encrypted
(ECMA-376 Agile); EXPORT_REQUIRE_WORKBOOK_PASSWORD=true refuses to deliver a workspace without one.
"""

from __future__ import annotations

import io
import random
import string
import zipfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import msoffcrypto
import olefile
import pytest
from bson import ObjectId, json_util
from msoffcrypto.exceptions import InvalidKeyError

from helpers import (
    attachments,
    cursor_of,
    health_checks,
    parse_json,
    plain_body,
    secret_forms,
    sheet_rows,
    xlsx_files,
)
from libreoffice_reader import displayed, libreoffice_rows, processes_of
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.export.email_text import PROTECTED_SENTENCE
from wa_export.mail.message import encoded_attachment_size
from wa_export.settings import load_settings

PASSWORD = "Tenant-Pa55 wörd/&%<x>"  # characters a URI, JSON, XML or UTF-16 spelling would change
FIELD_PASSWORD = "Field-Pa55-from-the-platform"
FIELD = "settings.export.workbook_password"


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # never the developer's .env


def _tenant(db: Any, name: str, contents: list[str], minutes_ago: float = 3, **document: Any) -> ObjectId:
    workspace_id = add_workspace(db, name)
    if document:
        db.workspaces.update_one({"_id": workspace_id}, {"$set": document})
    start = utcnow() - timedelta(minutes=minutes_ago)
    add_messages(
        db,
        add_chat(db, workspace_id),
        [{"content": text, "timestamp": start + timedelta(milliseconds=index)} for index, text in enumerate(contents)],
    )
    return workspace_id


def _decrypt(data: bytes, password: str) -> bytes:
    office_file = msoffcrypto.OfficeFile(io.BytesIO(data))
    office_file.load_key(password=password, verify_password=True)
    plain = io.BytesIO()
    office_file.decrypt(plain, verify_integrity=True)
    return plain.getvalue()


def _assert_encrypted(data: bytes) -> None:
    """An OLE compound file (the ECMA-376 encrypted package) that no zip/xlsx reader opens."""
    assert olefile.isOleFile(data)
    assert not zipfile.is_zipfile(io.BytesIO(data))
    with pytest.raises(zipfile.BadZipFile):
        sheet_rows(data)


def _mails_to(smtp_server: Any, address: str) -> list[Any]:
    return [mail for mail in smtp_server.messages if address in mail.rcpt_tos]


# --- 1. what is encrypted, and it holds exactly the plain rows ---------------------------------------


def test_kept_file_and_attachment_are_encrypted_and_hold_the_plain_rows(mongo_db, make_env, cli, smtp_server):
    contents = [f"Nachricht {index}: Grüße 😀 <b>&" for index in range(25)]
    workspace_id = _tenant(mongo_db, "Regulated Health", contents)
    recipient = "ops@health.test"
    env = make_env(
        **{f"WORKSPACE_{workspace_id}_EMAIL": recipient, f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD": PASSWORD}
    )
    export_dir = Path(env["EXPORT_DIR"])

    result = cli(["export"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [mail] = smtp_server.messages
    [(name, content_type, attached)] = attachments(mail.message())
    assert name.endswith(".xlsx")
    _assert_encrypted(attached)
    [kept] = xlsx_files(export_dir)
    assert kept.name == name
    _assert_encrypted(kept.read_bytes())
    assert kept.read_bytes() == attached
    assert kept.stat().st_mode & 0o777 == 0o600
    body = plain_body(mail.message())
    assert PROTECTED_SENTENCE in body and "password agreed separately" in PROTECTED_SENTENCE

    # The same window, plain: a manual export of the last hour without the password, kept only.
    plain_env = {key: value for key, value in env.items() if not key.endswith("_WORKBOOK_PASSWORD")}
    plain_env["EXPORT_DIR"] = str(export_dir.parent / "plain-exports")
    manual = cli(["export", "--hours", "1", "--no-email", "-w", str(workspace_id)], env=plain_env)
    assert manual.returncode == 0, manual.stdout + manual.stderr
    [plain_file] = xlsx_files(Path(plain_env["EXPORT_DIR"]))
    plain_rows = sheet_rows(plain_file)
    assert [row[2] for row in plain_rows] == contents

    assert sheet_rows(_decrypt(attached, PASSWORD)) == plain_rows
    for wrong in ("wrong", PASSWORD.upper(), PASSWORD[:-1]):
        with pytest.raises(InvalidKeyError):
            _decrypt(attached, wrong)

    # 2. An independent reader: LibreOffice, given the password, reads the same rows; without it, none.
    read = libreoffice_rows(kept, PASSWORD)
    assert read.opened and read.rows == [displayed(row) for row in plain_rows]
    refused = libreoffice_rows(kept, None)
    assert not refused.opened and refused.rows == []
    assert processes_of(read) == [] and processes_of(refused) == []


def test_manual_and_no_email_exports_encrypt_the_same_way_and_test_email_is_unchanged(
    mongo_db, make_env, cli, smtp_server
):
    workspace_id = _tenant(mongo_db, "Finance", ["balance inquiry", "transfer done"])
    env = make_env(**{f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD": PASSWORD})
    export_dir = Path(env["EXPORT_DIR"])

    manual = cli(["export", "--hours", "1", "--email", "auditor@finance.test"], env=env)
    assert manual.returncode == 0, manual.stdout + manual.stderr
    [mail] = smtp_server.messages
    [(_, _, attached)] = attachments(mail.message())
    _assert_encrypted(attached)
    assert [row[2] for row in sheet_rows(_decrypt(attached, PASSWORD))] == ["balance inquiry", "transfer done"]
    assert PROTECTED_SENTENCE in plain_body(mail.message())

    kept_only = cli(["export", "--hours", "1", "--no-email"], env=env)
    assert kept_only.returncode == 0, kept_only.stdout + kept_only.stderr
    files = xlsx_files(export_dir)
    assert len(files) == 2
    for path in files:
        _assert_encrypted(path.read_bytes())
        assert [row[2] for row in sheet_rows(_decrypt(path.read_bytes(), PASSWORD))] == [
            "balance inquiry",
            "transfer done",
        ]

    test_email = cli(["test-email", "--to", "ops@finance.test"], env=env)
    assert test_email.returncode == 0, test_email.stdout + test_email.stderr
    last = smtp_server.messages[-1].message()
    # Its sample workbook holds no personal data: plain as before, and the body says nothing of a password.
    [(_, _, sample)] = attachments(last)
    assert zipfile.is_zipfile(io.BytesIO(sample)) and PROTECTED_SENTENCE not in plain_body(last)


# --- 3. the password appears nowhere --------------------------------------------------------------


def _spellings(*passwords: str) -> list[bytes]:
    forms = secret_forms(*passwords)
    encoded = {form.encode("utf-8") for form in forms}
    encoded |= {password.encode("utf-16-le") for password in passwords}  # how Office derives the key
    encoded |= {json_util.dumps(password).strip('"').encode() for password in passwords}
    return sorted(encoded)


def _assert_absent(where: str, data: str | bytes, *passwords: str) -> None:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    for spelling in _spellings(*passwords):
        assert spelling not in raw, f"a spelling of the workbook password leaked into {where}"


COMMANDS = [
    ["export"],
    ["export", "--json"],
    ["export", "--hours", "1", "--email", "boss@tenant.test"],
    ["export", "--hours", "1", "--no-email", "--json"],
    ["export", "--dry-run"],
    ["export", "--dry-run", "--json"],
    ["stats"],
    ["stats", "--json"],
    ["health"],
    ["health", "--json"],
    ["state"],
    ["state", "--json"],
    ["logs"],
    ["logs", "--json"],
    ["logs", "--system"],
    ["logs", "--system", "--json"],
    ["config"],
    ["config", "--json"],
    ["test-email", "--to", "ops@tenant.test"],
    ["test-email", "--to", "ops@tenant.test", "--json"],
    ["cleanup", "--dry-run"],
    ["cleanup", "--dry-run", "--json"],
]


def test_the_password_appears_nowhere(mongo_db, make_env, cli, smtp_server, tmp_path):
    from_env = _tenant(mongo_db, "Env Tenant", ["first", "second"])
    from_field = _tenant(
        mongo_db, "Field Tenant", ["third"], settings={"export": {"workbook_password": FIELD_PASSWORD}}
    )
    metrics = tmp_path / "metrics" / "wa_export.prom"
    metrics.parent.mkdir()
    env = make_env(
        EXPORT_WORKBOOK_PASSWORD_FIELD=FIELD,
        EXPORT_METRICS_FILE=str(metrics),
        **{
            f"WORKSPACE_{from_env}_EMAIL": "ops@env.test",
            f"WORKSPACE_{from_field}_EMAIL": "ops@field.test",
            f"WORKSPACE_{from_env}_WORKBOOK_PASSWORD": PASSWORD,
        },
    )
    for command in COMMANDS:
        result = cli(command, env=env)
        assert result.returncode in (0, 1), f"{command}: {result.stdout}{result.stderr}"
        _assert_absent(f"stdout of {command}", result.stdout, PASSWORD, FIELD_PASSWORD)
        _assert_absent(f"stderr of {command}", result.stderr, PASSWORD, FIELD_PASSWORD)
    assert len(smtp_server.messages) >= 4
    for mail in smtp_server.messages:
        _assert_absent("an email", mail.data, PASSWORD, FIELD_PASSWORD)
    for name in mongo_db.list_collection_names():
        # The platform's own workspace document holds the field password by design; nothing of ours does.
        passwords = (PASSWORD,) if name == "workspaces" else (PASSWORD, FIELD_PASSWORD)
        for document in mongo_db[name].find():
            _assert_absent(f"a document of {name}", json_util.dumps(document), *passwords)
    assert metrics.exists()
    _assert_absent("the metrics file", metrics.read_bytes(), PASSWORD, FIELD_PASSWORD)
    kept = [path for path in Path(env["EXPORT_DIR"]).rglob("*") if path.is_file()]
    assert any(path.suffix == ".xlsx" for path in kept)
    for path in kept:
        _assert_absent(str(path), path.read_bytes(), PASSWORD, FIELD_PASSWORD)
        if path.suffix == ".xlsx":
            _assert_encrypted(path.read_bytes())

    config = parse_json(cli(["config", "--json"], env=env))
    [line] = [line for line in config["workspace_addresses"] if line["variable"].endswith("_WORKBOOK_PASSWORD")]
    assert line["variable"] == f"WORKSPACE_{from_env}_WORKBOOK_PASSWORD" and line["value"] == "********"


def test_unusable_passwords_fail_with_one_sentence_that_never_shows_them(
    mongo_db, make_env, cli, smtp_server, tmp_path
):
    too_long = "L" * 256
    workspace_id = _tenant(mongo_db, "Typo Tenant", ["hello"], settings={"export": {"workbook_password": too_long}})
    listed = _tenant(mongo_db, "List Tenant", ["hello"], settings={"export": {"workbook_password": ["a", "b"]}})
    env = make_env(
        EXPORT_WORKBOOK_PASSWORD_FIELD=FIELD,
        **{f"WORKSPACE_{workspace_id}_EMAIL": "ops@typo.test", f"WORKSPACE_{listed}_EMAIL": "ops@list.test"},
    )
    # In a document: that workspace fails (exit 1), naming the field and the workspace, not the value.
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    reasons = {r["workspace_id"]: r["reason"] for r in parse_json(result)["workspaces"]}
    assert FIELD in reasons[str(workspace_id)] and str(workspace_id) in reasons[str(workspace_id)]
    assert "255" in reasons[str(workspace_id)] and too_long not in result.stdout + result.stderr
    assert "not a string" in reasons[str(listed)]
    assert smtp_server.messages == [] and xlsx_files(Path(env["EXPORT_DIR"])) == []

    # In the environment: that workspace fails too (exit 1), for `config` as for a run; the value is never echoed.
    bad_env = {**env, f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD": too_long + "-env"}
    config = cli(["config"], env=bad_env)
    assert (
        "a run fails the workspaces of 1 invalid WORKSPACE_<ID>_EMAIL or _WORKBOOK_PASSWORD variable" in config.stdout
    )
    for command in (["config"], ["export", "--json"], ["export", "--dry-run", "--json"]):
        refused = cli(command, env=bad_env)
        assert refused.returncode == 1, f"{command}: {refused.stdout}{refused.stderr}"
        assert f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD" in refused.stdout + refused.stderr
        assert too_long not in refused.stdout + refused.stderr
    assert smtp_server.messages == [] and xlsx_files(Path(env["EXPORT_DIR"])) == []
    shown = {line["variable"]: line["value"] for line in parse_json(cli(["config", "--json"], env=env))["settings"]}
    assert shown["EXPORT_REQUIRE_WORKBOOK_PASSWORD"] == "false" and shown["EXPORT_WORKBOOK_PASSWORD_FIELD"] == FIELD
    flag = cli(["config"], env={**env, "EXPORT_REQUIRE_WORKBOOK_PASSWORD": "maybe"})
    assert (
        flag.returncode == 2
        and "INVALID EXPORT_REQUIRE_WORKBOOK_PASSWORD: must be true or false" in flag.stdout + flag.stderr
    )


def test_an_env_file_holding_a_workbook_password_must_be_private(make_env, cli, tmp_path):
    env_file = tmp_path / "wa.env"
    env_file.write_text(f"WORKSPACE_{'a' * 24}_WORKBOOK_PASSWORD={PASSWORD}\n")
    env_file.chmod(0o644)
    result = cli(["config", "--env-file", str(env_file)], env=make_env())
    assert f"chmod 600 {env_file}" in result.stderr
    _assert_absent("config", result.stdout + result.stderr, PASSWORD)


# --- 4. the document field, and the environment winning over it ------------------------------------


def test_document_field_supplies_the_password_and_the_environment_wins(mongo_db, make_env, cli, smtp_server):
    from_field = _tenant(
        mongo_db, "Field Only", ["from the field"], settings={"export": {"workbook_password": FIELD_PASSWORD}}
    )
    both = _tenant(mongo_db, "Both", ["env wins"], settings={"export": {"workbook_password": FIELD_PASSWORD}})
    neither = _tenant(mongo_db, "Neither", ["plain as before"])
    env = make_env(
        EXPORT_WORKBOOK_PASSWORD_FIELD=FIELD,
        **{
            f"WORKSPACE_{from_field}_EMAIL": "a@field.test",
            f"WORKSPACE_{both}_EMAIL": "b@both.test",
            f"WORKSPACE_{neither}_EMAIL": "c@neither.test",
            f"WORKSPACE_{both}_WORKBOOK_PASSWORD": PASSWORD,
        },
    )
    result = cli(["export"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr

    [(_, _, field_file)] = attachments(_mails_to(smtp_server, "a@field.test")[0].message())
    assert [row[2] for row in sheet_rows(_decrypt(field_file, FIELD_PASSWORD))] == ["from the field"]

    [(_, _, both_file)] = attachments(_mails_to(smtp_server, "b@both.test")[0].message())
    assert [row[2] for row in sheet_rows(_decrypt(both_file, PASSWORD))] == ["env wins"]
    with pytest.raises(InvalidKeyError):
        _decrypt(both_file, FIELD_PASSWORD)

    neither_mail = _mails_to(smtp_server, "c@neither.test")[0].message()
    [(_, _, plain_file)] = attachments(neither_mail)
    assert zipfile.is_zipfile(io.BytesIO(plain_file)) and [row[2] for row in sheet_rows(plain_file)] == [
        "plain as before"
    ]
    assert PROTECTED_SENTENCE not in plain_body(neither_mail)

    stats = parse_json(cli(["stats", "--json"], env=env))
    assert stats["encrypted_workspaces"] == 2
    health = health_checks(cli(["health", "--json"], env=env))
    assert "2 of 3" in health["workbook_passwords"]["reason"]


# --- 5. EXPORT_REQUIRE_WORKBOOK_PASSWORD --------------------------------------------------------


def test_a_required_password_that_is_missing_stops_that_workspace_only(mongo_db, make_env, cli, smtp_server):
    unprotected = _tenant(mongo_db, "Forgot The Password", ["must not travel in the clear"])
    protected = _tenant(mongo_db, "Protected", ["safe"])
    env = make_env(
        EXPORT_REQUIRE_WORKBOOK_PASSWORD="true",
        **{
            f"WORKSPACE_{unprotected}_EMAIL": "ops@forgot.test",
            f"WORKSPACE_{protected}_EMAIL": "ops@protected.test",
            f"WORKSPACE_{protected}_WORKBOOK_PASSWORD": PASSWORD,
        },
    )
    dry = cli(["export", "--dry-run", "--json"], env=env)
    assert dry.returncode == 1, "a dry run decides as the real run does"
    assert {r["workspace_id"]: r["outcome"] for r in parse_json(dry)["workspaces"]} == {
        str(unprotected): "failed",
        str(protected): "dry_run",
    }

    result = cli(["export", "--json"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    outcomes = {r["workspace_id"]: r for r in parse_json(result)["workspaces"]}
    reason = outcomes[str(unprotected)]["reason"]
    assert outcomes[str(unprotected)]["outcome"] == "failed"
    # One sentence naming the workspace and what to set.
    assert reason.count(". ") == 0 and reason.endswith(".") and "\n" not in reason
    assert str(unprotected) in reason and f"WORKSPACE_{unprotected}_WORKBOOK_PASSWORD" in reason
    assert _mails_to(smtp_server, "ops@forgot.test") == []
    assert not (Path(env["EXPORT_DIR"]) / "forgot_the_password").exists(), "no workbook of it, not even a kept one"
    [failed_log] = mongo_db.export_logs.find({"workspace_id": str(unprotected)})
    assert failed_log["status"] == "failed" and failed_log["error_message"] == reason
    [mail] = _mails_to(smtp_server, "ops@protected.test")
    [(_, _, attached)] = attachments(mail.message())
    assert [row[2] for row in sheet_rows(_decrypt(attached, PASSWORD))] == ["safe"]
    assert cursor_of(mongo_db, protected) is not None

    health = cli(["health", "--json"], env=env)
    check = health_checks(health)["workbook_passwords"]
    assert check["status"] == "failed" and str(unprotected) in check["reason"] and str(protected) not in check["reason"]
    assert health.returncode == 1

    # Its cursor stayed before the message: once a password is set, the held-back window goes out, encrypted.
    env[f"WORKSPACE_{unprotected}_WORKBOOK_PASSWORD"] = "Late-But-Set-1"
    later = cli(["export"], env=env)
    assert later.returncode == 0, later.stdout + later.stderr
    [late_mail] = _mails_to(smtp_server, "ops@forgot.test")
    [(_, _, late_file)] = attachments(late_mail.message())
    assert [row[2] for row in sheet_rows(_decrypt(late_file, "Late-But-Set-1"))] == ["must not travel in the clear"]
    assert len(_mails_to(smtp_server, "ops@protected.test")) == 1


# --- 6. parts: the attachment limit applies to the encrypted file ----------------------------------


def test_a_window_over_the_attachment_limit_goes_out_in_encrypted_parts_within_it(mongo_db, make_env, cli, smtp_server):
    noise = random.Random(20240501)
    # Random text: a workbook compresses repeated characters away, and the window must not fit one email.
    contents = [f"message {index:03d} " + "".join(noise.choices(string.ascii_letters, k=400)) for index in range(120)]
    workspace_id = _tenant(mongo_db, "Big Window", contents)
    limit_mb = 0.03
    env = make_env(
        EXPORT_MAX_ATTACHMENT_MB=str(limit_mb),
        **{f"WORKSPACE_{workspace_id}_EMAIL": "ops@big.test", f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD": PASSWORD},
    )
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    mails = smtp_server.messages
    assert len(mails) >= 2
    delivered = []
    for mail in mails:
        [(_, _, attached)] = attachments(mail.message())
        _assert_encrypted(attached)
        # The limit applies to the encrypted file as encoded for email.
        assert encoded_attachment_size(len(attached)) <= limit_mb * 2**20
        delivered += [row[2] for row in sheet_rows(_decrypt(attached, PASSWORD))]
    assert sorted(delivered) == contents, "every message once, across the parts"


# --- the delivery ledger: resend and verify of protected workbooks -----------------------------------


def test_resend_rebuilds_the_workbook_encrypted_and_verify_knows_the_encrypted_file(
    mongo_db, make_env, cli, smtp_server
):
    workspace_id = _tenant(mongo_db, "Ledger Tenant", ["first", "second"])
    env = make_env(
        **{
            f"WORKSPACE_{workspace_id}_EMAIL": "ops@ledger.test",
            f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD": PASSWORD,
        }
    )
    assert cli(["export"], env=env).returncode == 0
    [original] = mongo_db.export_logs.find({"status": "completed"})
    [kept] = xlsx_files(Path(env["EXPORT_DIR"]))
    # The ledger fingerprints the file that went out: the encrypted one, as the recipient holds it.
    found = cli(["verify", str(kept), "--json"], env=env)
    assert found.returncode == 0, found.stdout + found.stderr
    assert [facts["id"] for facts in parse_json(found)["entries"]] == [str(original["_id"])]

    resent = cli(["resend", str(original["_id"]), "--json"], env=env)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    mail = smtp_server.messages[-1].message()
    [(_, _, attached)] = attachments(mail)
    _assert_encrypted(attached)
    assert [row[2] for row in sheet_rows(_decrypt(attached, PASSWORD))] == ["first", "second"]
    assert PROTECTED_SENTENCE in plain_body(mail)
    _assert_absent("resend output", resent.stdout + resent.stderr, PASSWORD)

    # A platform that requires passwords re-sends nothing in the clear either.
    required = {key: value for key, value in env.items() if not key.endswith("_WORKBOOK_PASSWORD")}
    required["EXPORT_REQUIRE_WORKBOOK_PASSWORD"] = "true"
    refused = cli(["resend", str(original["_id"]), "--json"], env=required)
    assert refused.returncode == 1 and len(smtp_server.messages) == 2
    assert f"WORKSPACE_{workspace_id}_WORKBOOK_PASSWORD" in parse_json(refused)["error"]


def test_settings_never_show_a_workbook_password(tmp_path):
    environ = {"WORKSPACE_" + "b" * 24 + "_WORKBOOK_PASSWORD": PASSWORD, "EXPORT_DIR": str(tmp_path)}
    settings = load_settings(environ=environ)
    assert settings.workspace_variable("b" * 24, "WORKBOOK_PASSWORD") == PASSWORD
    _assert_absent("repr(settings)", repr(settings), PASSWORD)
    # Every error text the run writes is redacted with these.
    assert PASSWORD in settings.secrets()
