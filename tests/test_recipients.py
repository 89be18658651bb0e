"""Recipients from the platform: EXPORT_RECIPIENTS_FIELD next to WORKSPACE_<ID>_EMAIL.

The workspace document's field (a string with a comma list, or a list of
strings) supplies addresses; the environment variable wins; the allow-list
applies to both; a bad address in the database fails that workspace only.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient

from helpers import CommandLog, mailed_contents, parse_json, run_export
from seeding import add_chat, add_messages, add_workspace, utcnow
from servers import free_port
from wa_export.export.run import ExportRequest
from wa_export.recipients import recipients_for
from wa_export.settings import load_settings
from wa_export.store.connection import Store, Workspace

FIELD = "settings.export_email"
ALLOWED = "acme.test,partner.test"


def _workspace(mongo_db: Any, name: str, value: Any = None, **document: Any) -> ObjectId:
    workspace_id = add_workspace(mongo_db, name)
    if value is not None:
        mongo_db.workspaces.update_one({"_id": workspace_id}, {"$set": {FIELD: value, **document}})
    return workspace_id


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path, monkeypatch):
    # load_settings() reads ./.env: never the developer's.
    monkeypatch.chdir(tmp_path)


def test_addresses_from_the_workspace_document(mongo_db, make_env, cli, smtp_server):
    single = _workspace(mongo_db, "Single", "boss@acme.test")
    comma = _workspace(mongo_db, "Comma", "one@acme.test, two@partner.test;three@acme.test")
    listed = _workspace(mongo_db, "Listed", ["l1@acme.test", "l2@eu.acme.test"])
    env_wins = _workspace(mongo_db, "Env Wins", "from-db@acme.test")
    malformed = _workspace(mongo_db, "Malformed", "ops@acme.test, not-an-address")
    outside_db = _workspace(mongo_db, "Outside Db", ["ok@acme.test", "leak@evil.test"])
    outside_env = _workspace(mongo_db, "Outside Env", "fine@acme.test")
    nothing = _workspace(mongo_db, "Nothing")
    moment = utcnow() - timedelta(minutes=3)
    names = {}
    for workspace_id in (single, comma, listed, env_wins, malformed, outside_db, outside_env, nothing):
        names[workspace_id] = mongo_db.workspaces.find_one({"_id": workspace_id})["name"]
        add_messages(
            mongo_db, add_chat(mongo_db, workspace_id), [{"content": f"for {names[workspace_id]}", "timestamp": moment}]
        )
    env = make_env(
        EXPORT_RECIPIENTS_FIELD=FIELD,
        EXPORT_ALLOWED_EMAIL_DOMAINS=ALLOWED,
        **{f"WORKSPACE_{env_wins}_EMAIL": "from-env@partner.test", f"WORKSPACE_{outside_env}_EMAIL": "x@evil.test"},
    )

    result = cli(["export", "--json"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    outcomes = {ObjectId(r["workspace_id"]): r for r in parse_json(result)["workspaces"]}
    assert {names[w]: r["outcome"] for w, r in outcomes.items()} == {
        "Single": "completed",
        "Comma": "completed",
        "Listed": "completed",
        "Env Wins": "completed",
        "Malformed": "failed",
        "Outside Db": "failed",
        "Outside Env": "failed",
        "Nothing": "skipped",
    }
    assert {names[w]: r["recipients_source"] for w, r in outcomes.items()} == {
        "Single": "database",
        "Comma": "database",
        "Listed": "database",
        "Env Wins": "environment",
        "Malformed": "database",
        "Outside Db": "database",
        "Outside Env": "environment",
        "Nothing": "none",
    }
    delivered = {
        mailed_contents([mail])[0].removeprefix("for "): sorted(mail.rcpt_tos) for mail in smtp_server.messages
    }
    assert delivered == {
        "Single": ["boss@acme.test"],
        "Comma": ["one@acme.test", "three@acme.test", "two@partner.test"],
        "Listed": ["l1@acme.test", "l2@eu.acme.test"],
        "Env Wins": ["from-env@partner.test"],
    }, "nothing at all to a refused workspace, not even to its allowed addresses"

    reason = outcomes[malformed]["reason"]
    assert FIELD in reason and str(malformed) in reason and "'not-an-address'" in reason
    assert f"WORKSPACE_{malformed}_EMAIL" in reason
    reason = outcomes[outside_db]["reason"]
    assert "leak@evil.test" in reason and "EXPORT_ALLOWED_EMAIL_DOMAINS" in reason and FIELD in reason
    assert "ok@acme.test" not in reason
    reason = outcomes[outside_env]["reason"]
    assert "x@evil.test" in reason and f"WORKSPACE_{outside_env}_EMAIL" in reason
    assert FIELD in outcomes[nothing]["reason"] and f"WORKSPACE_{nothing}_EMAIL" in outcomes[nothing]["reason"]
    for workspace_id in (malformed, outside_db, outside_env):
        [log] = mongo_db.export_logs.find({"workspace_id": str(workspace_id)})
        assert log["status"] == "failed" and log["error_message"] == outcomes[workspace_id]["reason"]
    assert mongo_db.export_logs.count_documents({"status": "completed"}) == 4

    stats = parse_json(cli(["stats", "--json"], env=env))
    sources = {row["workspace_name"]: row["recipients"] for row in stats["workspaces"]}
    assert sources["Single"] == {
        "source": "database",
        "origin": FIELD,
        "addresses": 1,
        "problem": None,
        "problem_kind": None,
    }
    assert sources["Env Wins"]["source"] == "environment"
    assert sources["Env Wins"]["origin"] == f"WORKSPACE_{env_wins}_EMAIL"
    assert sources["Nothing"]["source"] == "none" and sources["Malformed"]["problem_kind"] == "invalid"
    assert sources["Outside Db"]["problem_kind"] == "domain"
    plain_stats = cli(["stats"], env=env)
    [line] = [line for line in plain_stats.stdout.splitlines() if str(comma) in line]
    assert line.split()[-1] == "db"
    [line] = [line for line in plain_stats.stdout.splitlines() if str(malformed) in line]
    assert line.split()[-1] == "bad"
    one = cli(["stats", str(listed)], env=env)
    assert f"Addresses from the workspace field {FIELD} (database field): 2." in one.stdout
    one = cli(["stats", str(env_wins)], env=env)
    assert f"Addresses from WORKSPACE_{env_wins}_EMAIL (environment variable): 1." in one.stdout

    health = parse_json(cli(["health", "--json"], env=env))
    check = {c["name"]: c for c in health["checks"]}["workspace_addresses"]
    assert check["status"] == "failed"
    assert check["details"]["sources"] == {"environment": 2, "database": 5, "none": 1}
    assert {entry["id"] for entry in check["details"]["refused"]} == {str(malformed), str(outside_db), str(outside_env)}
    assert "Nothing" in check["reason"] and FIELD in check["reason"]
    by_id = {entry["id"]: entry for entry in check["details"]["workspaces"]}
    assert by_id[str(single)]["source"] == "database" and by_id[str(env_wins)]["source"] == "environment"

    # The platform fixes the address: the next run delivers the held-back window, nothing lost.
    mongo_db.workspaces.update_one({"_id": malformed}, {"$set": {FIELD: "ops@acme.test"}})
    after = cli(["export", "--json"], env=env)
    [fixed] = [r for r in parse_json(after)["workspaces"] if r["workspace_id"] == str(malformed)]
    assert fixed["outcome"] == "completed" and fixed["recipients"] == ["ops@acme.test"]
    [mail] = [m for m in smtp_server.messages[4:] if m.rcpt_tos == ["ops@acme.test"]]
    assert mailed_contents([mail]) == ["for Malformed"]


def test_plain_export_line_names_the_field_and_the_workspace(mongo_db, make_env, cli, smtp_server):
    good = _workspace(mongo_db, "Good", "ops@acme.test")
    bad = _workspace(mongo_db, "Bad", ["ops@acme.test", 42])
    for workspace_id in (good, bad):
        add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": "hi", "timestamp": utcnow()}])
    result = cli(["export"], env=make_env(EXPORT_RECIPIENTS_FIELD=FIELD))
    assert result.returncode == 1, result.stdout + result.stderr
    [line] = [line for line in result.stdout.splitlines() if f"workspace={bad}" in line]
    assert " ERROR " in line and "outcome=failed" in line
    assert f"{FIELD} of workspace {bad} holds a list with an item of type int" in line
    [line] = [line for line in result.stdout.splitlines() if f"workspace={good}" in line]
    assert "outcome=completed" in line
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [["ops@acme.test"]]


def test_test_email_uses_the_workspace_field(mongo_db, make_env, cli, smtp_server):
    workspace_id = _workspace(mongo_db, "Acme", ["a@acme.test", "b@acme.test"])
    env = make_env(EXPORT_RECIPIENTS_FIELD=FIELD)
    result = cli(["test-email", "--workspace", str(workspace_id), "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert parse_json(result)["recipients"] == ["a@acme.test", "b@acme.test"]
    assert sorted(smtp_server.messages[0].rcpt_tos) == ["a@acme.test", "b@acme.test"]

    mongo_db.workspaces.update_one({"_id": workspace_id}, {"$set": {FIELD: "a@acme.test, broken"}})
    refused = cli(["test-email", "--workspace", str(workspace_id)], env=env)
    assert refused.returncode == 1
    assert "step recipient" in refused.stderr and FIELD in refused.stderr and "'broken'" in refused.stderr
    outside = cli(
        ["test-email", "--workspace", str(workspace_id)],
        env=make_env(
            EXPORT_RECIPIENTS_FIELD=FIELD,
            EXPORT_ALLOWED_EMAIL_DOMAINS="partner.test",
            **{f"WORKSPACE_{workspace_id}_EMAIL": "x@acme.test"},
        ),
    )
    assert outside.returncode == 1 and "step domain" in outside.stderr and "x@acme.test" in outside.stderr
    assert smtp_server.connection_count == 1, "refused before connecting"

    mongo_db.workspaces.update_one({"_id": workspace_id}, {"$unset": {FIELD: ""}})
    missing = cli(["test-email", "--workspace", str(workspace_id)], env=env)
    assert missing.returncode == 2 and FIELD in missing.stderr and f"WORKSPACE_{workspace_id}_EMAIL" in missing.stderr


def test_test_email_reads_mongodb_only_for_addresses_in_the_database(make_env, cli, smtp_server):
    workspace = "65a1b2c3d4e5f60718293a4b"
    down = {
        "EXPORT_RECIPIENTS_FIELD": FIELD,
        "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}",
        "MONGODB_TIMEOUT_SECONDS": "1",
    }
    from_env = cli(
        ["test-email", "--workspace", workspace],
        env=make_env(**down, **{f"WORKSPACE_{workspace}_EMAIL": "ops@acme.test"}),
    )
    assert from_env.returncode == 0, from_env.stdout + from_env.stderr
    assert [mail.rcpt_tos for mail in smtp_server.messages] == [["ops@acme.test"]]
    from_db = cli(["test-email", "--workspace", workspace], env=make_env(**down))
    assert from_db.returncode == 3, from_db.stdout + from_db.stderr
    [line] = from_db.stderr.strip().splitlines()
    assert "MongoDB is unreachable" in line and "Traceback" not in from_db.stderr
    assert len(smtp_server.messages) == 1


@pytest.mark.parametrize("value", ["settings..email", "$where", "settings.$x", "a b", "name.first", "status"])
def test_a_bad_field_path_is_a_configuration_error(make_env, cli, value):
    result = cli(["export"], env=make_env(EXPORT_RECIPIENTS_FIELD=value))
    assert result.returncode == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("wa-export: EXPORT_RECIPIENTS_FIELD") and line.endswith(".")


def test_the_field_is_read_with_the_workspace_list(mongo_db, make_env, smtp_server):
    for number in range(5):
        workspace_id = _workspace(mongo_db, f"Tenant {number}", f"t{number}@acme.test")
        add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"content": "hi", "timestamp": utcnow()}])
    settings = load_settings(environ=make_env(EXPORT_RECIPIENTS_FIELD=FIELD))
    listener = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[listener])
    try:
        result = run_export(settings, Store(client, settings), ExportRequest())
    finally:
        client.close()
    assert result.exit_code == 0 and result.count("completed") == 5, result.summary()
    [find] = listener.bodies("find", "workspaces")  # one read of workspaces for five exports
    assert find["projection"] == {"name": 1, "status": 1, FIELD: 1}
    assert len(smtp_server.messages) == 5


# --- the policy itself (recipients.py) --------------------------------------------------


def _policy(value: Any, **env: str):
    settings = load_settings(environ={"EXPORT_RECIPIENTS_FIELD": FIELD, **env})
    workspace = Workspace(
        "65a1b2c3d4e5f60718293a4b",
        "Acme",
        "active",
        ObjectId("65a1b2c3d4e5f60718293a4b"),
        document_values={"EXPORT_RECIPIENTS_FIELD": value},
    )
    return recipients_for(workspace, settings)


@pytest.mark.parametrize(
    ("value", "addresses"),
    [
        ("a@acme.test", ("a@acme.test",)),
        (" a@acme.test , b@acme.test;A@ACME.TEST ", ("a@acme.test", "b@acme.test")),
        (["a@acme.test", "b@acme.test, c@acme.test"], ("a@acme.test", "b@acme.test", "c@acme.test")),
    ],
)
def test_database_forms(value: Any, addresses: tuple[str, ...]) -> None:
    found = _policy(value)
    assert found.addresses == addresses and found.source == "database" and found.origin == FIELD
    assert found.problem is None and found.usable


@pytest.mark.parametrize("value", [None, "", " , ", []])
def test_an_empty_value_is_no_address(value: Any) -> None:
    found = _policy(value)
    assert found.source == "none" and found.addresses == () and found.problem is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (42, f"{FIELD} of workspace 65a1b2c3d4e5f60718293a4b holds a value of type int, not a string"),
        ({"to": "a@acme.test"}, "holds a value of type dict"),
        (["a@acme.test", None], "holds a list with an item of type NoneType"),
        ("a@acme.test\r\nBcc: x@evil.test", r"'a@acme.test\r\nBcc: x@evil.test'"),
        ("x" * 500, "'" + "x" * 80 + "…'"),
    ],
)
def test_database_problems_name_the_field_and_the_workspace(value: Any, expected: str) -> None:
    found = _policy(value)
    assert not found.usable and found.problem_kind == "invalid" and found.problem is not None
    assert expected in found.problem
    assert "\n" not in found.problem and "\r" not in found.problem
    assert "WORKSPACE_65a1b2c3d4e5f60718293a4b_EMAIL" in found.problem


def test_environment_wins_and_the_allow_list_applies_to_both() -> None:
    variable = "WORKSPACE_65a1b2c3d4e5f60718293a4b_EMAIL"
    found = _policy(["broken"], **{variable: "env@acme.test"})
    assert found.source == "environment" and found.addresses == ("env@acme.test",) and found.problem is None
    refused = _policy("db@evil.test", EXPORT_ALLOWED_EMAIL_DOMAINS="acme.test")
    assert refused.problem_kind == "domain" and "db@evil.test" in (refused.problem or "")
    refused = _policy("db@acme.test", EXPORT_ALLOWED_EMAIL_DOMAINS="partner.test", **{variable: "env@acme.test"})
    assert refused.source == "environment" and refused.problem_kind == "domain"
    assert f"fix {variable}" in (refused.problem or "")
    unset = recipients_for(
        Workspace(
            "65a1b2c3d4e5f60718293a4b",
            "Acme",
            "active",
            ObjectId("65a1b2c3d4e5f60718293a4b"),
            {"EXPORT_RECIPIENTS_FIELD": "a@acme.test"},
        ),
        load_settings(environ={}),
    )
    assert unset.source == "none", "without EXPORT_RECIPIENTS_FIELD the database is never used"
