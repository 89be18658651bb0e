"""Honest results: a run never says "all fine" when its workspaces and addresses do not meet.

The installed CLI against the real test servers: a MONGODB_DATABASE without
workspaces, active workspaces without an address, WORKSPACE_*_EMAIL variables
that match no active workspace, an invalid address of one workspace.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from helpers import CommandLog, health_checks, lines_with, one_stderr_line, parse_json, run_export
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.export.run import ExportRequest
from wa_export.settings import load_settings
from wa_export.store.connection import Store

# --- MONGODB_DATABASE ---------------------------------------------------------------------------


def test_database_without_workspaces_collection_is_a_configuration_error(mongo_db, make_env, cli, smtp_server):
    add_workspace(mongo_db, "Lives Elsewhere")
    typo = f"{mongo_db.name}_typo"
    env = make_env(MONGODB_DATABASE=typo)

    result = cli(["export"], env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    sentence = one_stderr_line(result.stderr)
    assert "MONGODB_DATABASE" in sentence and repr(typo) in sentence
    assert mongo_db.name in sentence  # the database that does have a workspaces collection
    # Nothing was written into the wrong database (not even the run event).
    assert typo not in mongo_db.client.list_database_names()

    as_json = cli(["export", "--json"], env=env)
    assert as_json.returncode == 2 and "MONGODB_DATABASE" in parse_json(as_json)["error"]
    assert smtp_server.connection_count == 0
    # Every other command that reads the platform's data: tests/test_wrong_database.py.


def test_databases_that_may_not_be_listed_are_left_out_quietly(mongo_db, make_env, tmp_path, monkeypatch):
    add_workspace(mongo_db, "Lives Elsewhere")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env(MONGODB_DATABASE=f"{mongo_db.name}_typo"))

    def not_permitted(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise OperationFailure("not authorized on admin to execute command { listDatabases: 1 }", 13)

    monkeypatch.setattr(MongoClient, "list_database_names", not_permitted)
    store = Store.open(settings)
    try:
        problem = store.workspaces_collection_problem()
        assert problem is not None and "MONGODB_DATABASE" in problem
        assert "databases that have one" not in problem and "not authorized" not in problem
        # Not even allowed to list collections: no verdict, the empty list stays a warning.
        monkeypatch.setattr(Database, "list_collection_names", not_permitted)
        assert store.workspaces_collection_problem() is None
    finally:
        store.close()


def test_no_active_workspace_is_a_warning_not_a_failure(mongo_db, make_env, cli, smtp_server):
    add_workspace(mongo_db, "Paused Tenant", status="inactive")
    env = make_env()
    result = cli(["export"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = lines_with(result.stdout, " WARNING ", "no active workspace")
    assert repr(mongo_db.name) in warning and "MONGODB_DATABASE" in warning
    document = parse_json(cli(["export", "--json"], env=env))
    assert [w["kind"] for w in document["warnings"]] == ["no_active_workspace"]

    checks_result = cli(["health", "--json"], env=env)
    checks = health_checks(checks_result)
    assert checks_result.returncode == 0, checks  # a warning, no failed check
    assert checks["workspace_addresses"]["status"] == "warning"
    assert "no active workspace" in checks["workspace_addresses"]["reason"]


def test_the_database_check_costs_nothing_on_a_normal_run(mongo_db, make_env, tmp_path, monkeypatch, smtp_server):
    monkeypatch.chdir(tmp_path)

    def commands(env: dict[str, str]) -> Counter[str]:
        settings = load_settings(environ=env)
        log = CommandLog()
        client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[log])
        try:
            run_export(settings, Store(client, settings), ExportRequest())
        finally:
            client.close()
        return Counter(log.names)

    add_workspace(mongo_db, "Paused", status="inactive")
    empty = commands(make_env())
    assert empty["listCollections"] == 1 and empty["listDatabases"] == 0  # the database has workspaces

    workspace_id = add_workspace(mongo_db, "Active")
    normal = commands(make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@active.test"}))
    assert normal["listCollections"] == 0 and normal["listDatabases"] == 0


# --- workspaces and WORKSPACE_*_EMAIL that do not meet ---------------------------------------------


def test_workspace_without_address_is_a_warning_on_every_run(mongo_db, make_env, cli, smtp_server):
    configured = add_workspace(mongo_db, "Configured")
    forgotten = add_workspace(mongo_db, "Forgotten Ltd")
    for workspace_id in (configured, forgotten):
        add_messages(mongo_db, add_chat(mongo_db, workspace_id), [{"timestamp": utcnow() - timedelta(minutes=2)}])
    env = make_env(**{f"WORKSPACE_{configured}_EMAIL": "ops@configured.test"})
    for _ in range(2):  # every run, not only the first: cron output is read at random
        result = cli(["export"], env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        [warning] = lines_with(result.stdout, " WARNING ", str(forgotten))
        assert f"WORKSPACE_{forgotten}_EMAIL" in warning and "not exported" in warning
        assert not lines_with(result.stdout, " WARNING ", str(configured))
    document = parse_json(cli(["export", "--json"], env=env))
    assert [(w["kind"], w["workspace_id"]) for w in document["warnings"]] == [("missing_address", str(forgotten))]
    # --email replaces the configured addresses: nothing is missing then.
    manual = parse_json(cli(["export", "--json", "--hours", "1", "--email", "me@ops.test"], env=env))
    assert manual["warnings"] == []


def test_no_address_warning_only_for_a_workspace_skipped_for_it(mongo_db, make_env, cli, smtp_server):
    # An inactive workspace is skipped for its status, and --no-email needs no address: neither "is not exported".
    sleepy = add_workspace(mongo_db, "Sleepy", status="inactive")
    bare = add_workspace(mongo_db, "Bare")
    add_messages(mongo_db, add_chat(mongo_db, bare), [{"timestamp": utcnow() - timedelta(minutes=2)}])
    env = make_env()
    named = cli(["export", "--workspace", str(sleepy)], env=env)
    assert named.returncode == 0 and "outcome=skipped" in named.stdout, named.stdout + named.stderr
    assert not lines_with(named.stdout, " WARNING ", "has no email address")
    files_only = cli(["export", "--no-email"], env=env)
    assert files_only.returncode == 0 and "outcome=written" in files_only.stdout, files_only.stdout
    assert not lines_with(files_only.stdout, " WARNING ", "has no email address")


def test_addresses_from_the_workspace_document_are_not_missing(mongo_db, make_env, cli, cli_process, smtp_server):
    # The recipients policy decides, not WORKSPACE_<ID>_EMAIL alone: EXPORT_RECIPIENTS_FIELD counts too.
    from_platform = add_workspace(mongo_db, "Addressed In The Platform")
    mongo_db.workspaces.update_one({"_id": from_platform}, {"$set": {"settings": {"export_email": "ops@p.test"}}})
    bare = add_workspace(mongo_db, "Bare")
    env = make_env(EXPORT_RECIPIENTS_FIELD="settings.export_email")
    for run, args in ((cli, ["export"]), (cli_process, ["export", "--workers", "2"])):  # workers: a real process
        result = run(args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        [warning] = lines_with(result.stdout, " WARNING ", "has no email address")
        assert str(bare) in warning and "settings.export_email" in warning, warning
        assert not lines_with(result.stdout, " WARNING ", str(from_platform)), args


def test_address_variables_that_match_no_active_workspace_are_named(mongo_db, make_env, cli, cli_process, smtp_server):
    active = add_workspace(mongo_db, "Active")
    inactive = add_workspace(mongo_db, "Gone", status="inactive")
    typo_id = str(ObjectId())
    malformed = f"WORKSPACE_{str(active)[:-3]}aO1_EMAIL"  # the letter O, not a zero: not hexadecimal
    env = make_env(
        **{
            f"WORKSPACE_{active}_EMAIL": "ops@active.test",
            f"WORKSPACE_{inactive}_EMAIL": "ops@gone.test",
            f"WORKSPACE_{typo_id}_EMAIL": "ops@typo.test",
            malformed: "ops@malformed.test",
        }
    )
    for run, args in ((cli, ["export"]), (cli_process, ["export", "--workers", "2"])):  # workers: a real process
        result = run(args, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        for name in (f"WORKSPACE_{inactive}_EMAIL", f"WORKSPACE_{typo_id}_EMAIL", malformed):
            assert len(lines_with(result.stdout, " WARNING ", name)) == 1, (args, name, result.stdout)
        assert not lines_with(result.stdout, " WARNING ", f"WORKSPACE_{active}_EMAIL")

    checks_result = cli(["health", "--json"], env=env)
    addresses = health_checks(checks_result)["workspace_addresses"]
    assert checks_result.returncode == 0, addresses
    assert addresses["status"] == "warning"
    # The reason names the first stray variable and counts the rest; details list them all.
    first_stray = min(f"WORKSPACE_{inactive}_EMAIL", f"WORKSPACE_{typo_id}_EMAIL")
    assert f"{first_stray} and 1 more match no active workspace" in addresses["reason"]
    assert f"{malformed} applies to no workspace" in addresses["reason"]
    assert sorted(addresses["details"]["configured_for_unknown_or_inactive"]) == sorted([str(inactive), typo_id])
    assert addresses["details"]["malformed_variables"] == [malformed]


def test_invalid_address_is_named_by_health_and_test_email(mongo_db, make_env, cli, smtp_server):
    broken = add_workspace(mongo_db, "Typo Tenant")
    variable = f"WORKSPACE_{broken}_EMAIL"
    env = make_env(**{variable: "ops@typo.test; not an address"})
    checks_result = cli(["health", "--json"], env=env)
    code, checks = checks_result.returncode, health_checks(checks_result)
    assert code == 1 and checks["workspace_addresses"]["status"] == "failed"
    assert (
        "invalid" in checks["workspace_addresses"]["reason"] and str(broken) in checks["workspace_addresses"]["reason"]
    )
    assert checks["workspace_addresses"]["details"]["invalid"][0]["id"] == str(broken)

    result = cli(["test-email", "--workspace", str(broken)], env=env)
    assert result.returncode == 1  # the refusal an export would meet (the recipients policy), before any SMTP
    assert variable in one_stderr_line(result.stderr) and "not an address" in result.stderr
    assert smtp_server.connection_count == 0
