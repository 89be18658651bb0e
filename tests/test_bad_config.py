"""Bad configuration fails fast with one sentence naming the variable, no secret."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from urllib.parse import quote

import pytest

from helpers import MONGO_SECRET, SMTP_SECRET, assert_no_secret, mailed_contents
from seeding import add_chat, add_messages, add_workspace, utcnow

WORKSPACE = "0123456789abcdef01234567"
# "e.g." and "i.e." do not end a sentence.
SENTENCE_BREAK = re.compile(r"(?<!e\.g)(?<!i\.e)[.;!?]\s+[A-Z]")

BAD_SETTINGS = [
    ({"SMTP_PORT": "five-eight-seven"}, "SMTP_PORT"),
    ({"EXPORT_TIMEZONE": "Mars/Olympus_Mons"}, "EXPORT_TIMEZONE"),
    ({"EXPORT_INTERVAL_MINUTES": "0"}, "EXPORT_INTERVAL_MINUTES"),
    ({"EXPORT_INTERVAL_MINUTES": "-15"}, "EXPORT_INTERVAL_MINUTES"),
]
# An invalid WORKSPACE_<ID>_EMAIL fails that workspace only (test_invalid_workspace_address_fails_only_it).
BAD_ADDRESSES = ["ops@acme.test, not an address", "ops@acme.test\r\nBcc: attacker@example.com"]


def _secret_env(make_env, mongo_server_uri: str, **overrides: str) -> dict[str, str]:
    # A password in the URI (never used: every case fails before connecting).
    with_password = mongo_server_uri.replace("mongodb://", f"mongodb://wa_export:{quote(MONGO_SECRET, safe='')}@", 1)
    return make_env(MONGODB_URI=with_password, SMTP_PASSWORD=SMTP_SECRET, **overrides)


def assert_one_sentence_naming(text: str, variable: str) -> str:
    """stderr is exactly one line 'wa-export: <one sentence naming variable>.'"""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    message = lines[0]
    assert message.startswith("wa-export: "), message
    sentence = message.removeprefix("wa-export: ")
    assert variable in sentence, sentence
    assert sentence.endswith("."), sentence
    assert SENTENCE_BREAK.search(sentence) is None, f"more than one sentence: {sentence}"
    assert "Traceback" not in sentence
    return sentence


@pytest.mark.parametrize(("overrides", "variable"), BAD_SETTINGS, ids=[v for _, v in BAD_SETTINGS])
def test_invalid_setting_exits_2_with_one_sentence(overrides, variable, make_env, mongo_server_uri, cli, smtp_server):
    env = _secret_env(make_env, mongo_server_uri, **overrides)
    result = cli(["export"], env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert_one_sentence_naming(result.stderr, variable)
    assert_no_secret("output", result.stdout, result.stderr)
    assert smtp_server.connection_count == 0


def test_invalid_setting_with_json_is_one_json_document(make_env, mongo_server_uri, cli, smtp_server):
    env = _secret_env(make_env, mongo_server_uri, EXPORT_TIMEZONE="Not/AZone")
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False and document["exit_code"] == 2
    assert "EXPORT_TIMEZONE" in document["error"] and "Not/AZone" in document["error"]
    assert_one_sentence_naming(result.stderr, "EXPORT_TIMEZONE")
    assert_no_secret("output", result.stdout, result.stderr)


def test_env_file_values_are_validated_too(make_env, mongo_server_uri, cli, tmp_path):
    env_file = tmp_path / "wa.env"
    env_file.write_text(f"SMTP_PASSWORD={SMTP_SECRET}\nEXPORT_INTERVAL_MINUTES=0\n")
    env = make_env(SMTP_PASSWORD=None, EXPORT_INTERVAL_MINUTES=None)
    result = cli(["--env-file", str(env_file), "export"], env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_one_sentence_naming(result.stderr, "EXPORT_INTERVAL_MINUTES")
    assert_no_secret("output", result.stdout, result.stderr)


def test_email_option_outside_allowed_domains_is_refused(mongo_db, make_env, mongo_server_uri, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Acme")
    add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": "hi", "timestamp": utcnow()}])
    env = _secret_env(make_env, mongo_server_uri, EXPORT_ALLOWED_EMAIL_DOMAINS="acme.test, partner.test")
    for addresses in (["boss@acme.test", "leak@evil.test"], ["x@acme.test.evil.test"]):
        args = ["export", "--workspace", str(workspace_id), "--hours", "1"]
        for address in addresses:
            args += ["--email", address]
        result = cli(args, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        sentence = assert_one_sentence_naming(result.stderr, "EXPORT_ALLOWED_EMAIL_DOMAINS")
        assert "--email" in sentence and addresses[-1] in sentence
        assert "boss@acme.test" not in sentence
        assert_no_secret("output", result.stdout, result.stderr)
    assert smtp_server.connection_count == 0 and smtp_server.messages == []
    # An allowed address (a subdomain counts as inside its domain) is fine.
    ok = make_env(EXPORT_ALLOWED_EMAIL_DOMAINS="acme.test")
    result = cli(["export", "-w", str(workspace_id), "--hours", "1", "--email", "boss@eu.acme.test"], env=ok)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [["boss@eu.acme.test"]]


def test_configured_recipient_outside_allowed_domains_fails_only_that_workspace(mongo_db, make_env, cli, smtp_server):
    good = add_workspace(mongo_db, "Good Tenant")
    bad = add_workspace(mongo_db, "Leaky Tenant")
    also_good = add_workspace(mongo_db, "Partner Tenant")
    moment = utcnow() - timedelta(minutes=3)
    for workspace_id, text in ((good, "for good"), (bad, "for bad"), (also_good, "for partner")):
        add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": text, "timestamp": moment}])
    recipients = {
        f"WORKSPACE_{good}_EMAIL": "ops@acme.test",
        f"WORKSPACE_{bad}_EMAIL": "ops@acme.test, leak@evil.test",
        f"WORKSPACE_{also_good}_EMAIL": "team@partner.test",
    }
    env = make_env(EXPORT_ALLOWED_EMAIL_DOMAINS="acme.test,partner.test", **recipients)

    result = cli(["export"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = {
        wid: [line for line in result.stdout.splitlines() if f"workspace={wid}" in line]
        for wid in (good, bad, also_good)
    }
    assert " INFO " in lines[good][0] and "outcome=completed" in lines[good][0]
    assert " INFO " in lines[also_good][0] and "outcome=completed" in lines[also_good][0]
    [error_line] = lines[bad]
    assert " ERROR " in error_line and "outcome=failed" in error_line
    assert "leak@evil.test" in error_line and "EXPORT_ALLOWED_EMAIL_DOMAINS" in error_line
    assert f"WORKSPACE_{bad}_EMAIL" in error_line

    # Nothing went to the refused workspace, not even to its allowed address.
    assert sorted(mail.rcpt_tos[0] for mail in smtp_server.messages) == ["ops@acme.test", "team@partner.test"]
    assert all(len(mail.rcpt_tos) == 1 for mail in smtp_server.messages)
    assert all(b"for bad" not in mail.data for mail in smtp_server.messages)
    log = mongo_db.export_logs.find_one({"workspace_id": str(bad)})
    assert log["status"] == "failed" and "leak@evil.test" in log["error_message"]
    assert "EXPORT_ALLOWED_EMAIL_DOMAINS" in log["error_message"]
    assert mongo_db.export_logs.count_documents({"status": "completed"}) == 2
    event = mongo_db.system_logs.find_one({"kind": "export_run"})
    assert event["event_type"] == "error" and event["failed"] == 1 and event["completed"] == 2
    # The refused workspace's first window is pinned, its cursor never moved past its message.
    state = mongo_db.export_state.find_one({"_id": str(bad)})
    message = mongo_db.messages.find_one({"content": "for bad"})
    assert state["cursor"] <= message["_id"] and state["lease_owner"] is None
    assert state["consecutive_failures"] == 1 and "EXPORT_ALLOWED_EMAIL_DOMAINS" in state["last_error"]

    # Once the operator fixes the address, the next run delivers the window: nothing lost.
    fixed = make_env(
        EXPORT_ALLOWED_EMAIL_DOMAINS="acme.test,partner.test",
        **{**recipients, f"WORKSPACE_{bad}_EMAIL": "ops@acme.test"},
    )
    after = cli(["export"], env=fixed)
    assert after.returncode == 0, after.stdout + after.stderr
    assert after.stdout.count("outcome=completed") == 1  # the other two have nothing new
    [delivered] = smtp_server.messages[2:]
    assert delivered.rcpt_tos == ["ops@acme.test"]
    assert mailed_contents([delivered]) == ["for bad"]


@pytest.mark.parametrize("bad_value", BAD_ADDRESSES, ids=["not-an-address", "header-injection"])
def test_invalid_workspace_address_fails_only_it(bad_value, mongo_db, make_env, cli, smtp_server):
    good = add_workspace(mongo_db, "Good Tenant")
    broken = add_workspace(mongo_db, "Typo Tenant")
    moment = utcnow() - timedelta(minutes=3)
    for workspace_id, text in ((good, "for good"), (broken, "for broken")):
        add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": text, "timestamp": moment}])
    variable = f"WORKSPACE_{broken}_EMAIL"
    env = make_env(**{f"WORKSPACE_{good}_EMAIL": "ops@good.test", variable: bad_value})

    result = cli(["export"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr  # some work failed, not a usage error
    [good_line] = [line for line in result.stdout.splitlines() if f"workspace={good}" in line]
    [error_line] = [line for line in result.stdout.splitlines() if f"workspace={broken}" in line]
    assert "outcome=completed" in good_line
    assert " ERROR " in error_line and "outcome=failed" in error_line and variable in error_line
    # The good tenant got its mail; nothing went to the typo tenant or to an injected header.
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [["ops@good.test"]]
    assert mailed_contents(smtp_server.messages) == ["for good"]
    log = mongo_db.export_logs.find_one({"workspace_id": str(broken)})
    assert log["status"] == "failed" and variable in log["error_message"]
    assert "invalid email address" in log["error_message"]

    # Once fixed, the next run delivers the typo tenant's window: nothing lost.
    fixed = make_env(**{f"WORKSPACE_{good}_EMAIL": "ops@good.test", variable: "ops@typo.test"})
    after = cli(["export"], env=fixed)
    assert after.returncode == 0, after.stdout + after.stderr
    [delivered] = smtp_server.messages[1:]
    assert delivered.rcpt_tos == ["ops@typo.test"] and mailed_contents([delivered]) == ["for broken"]
