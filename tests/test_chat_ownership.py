"""One ownership rule (store/ownership.py): every path gives a chat to the same workspace, or to nobody.

A chat whose workspace_id names two workspaces belongs to neither: the scheduled
pass, a lagging workspace's own path, a manual export, `stats` and `state` all
leave it out, and the run counts its messages as ambiguous_chat. A workspace
stored twice (ObjectId and string `_id`) is one tenant: exported once, named by
the run's warnings and by `health`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId

from helpers import health_checks, mailed_contents, parse_json
from seeding import add_arrived, add_chat, add_workspace, settle_arrivals, utcnow


def _json(cli: Any, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    result = cli([*args, "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return parse_json(result)


def test_a_chat_naming_two_workspaces_belongs_to_neither_on_every_path(mongo_db, make_env, cli, smtp_server):
    alpha = add_workspace(mongo_db, "Alpha Owner")
    beta = add_workspace(mongo_db, "Beta Owner")
    alpha_chat, beta_chat = add_chat(mongo_db, alpha), add_chat(mongo_db, beta)
    shared = add_chat(mongo_db, [alpha, beta])  # workspace_id is an array: names no single workspace
    env = make_env(**{f"WORKSPACE_{alpha}_EMAIL": "alpha@own.test", f"WORKSPACE_{beta}_EMAIL": "beta@own.test"})
    _json(cli, ["export"], env)  # both get their cursors
    assert smtp_server.messages == []

    # Alpha's exports were off for a week: it catches up on its own path (a laggard); Beta shares the pass.
    mongo_db.export_state.update_one(
        {"_id": str(alpha)}, {"$set": {"cursor": ObjectId.from_datetime(utcnow() - timedelta(days=7))}}
    )
    add_arrived(mongo_db, alpha_chat, utcnow() - timedelta(days=3), "alpha-backlog")
    add_arrived(
        mongo_db, shared, utcnow() - timedelta(days=3), "shared-backlog"
    )  # only Alpha's own path reads this far back
    add_arrived(mongo_db, alpha_chat, utcnow(), "alpha-now")
    add_arrived(mongo_db, str(alpha_chat), utcnow(), "alpha-string-chat-id")
    add_arrived(mongo_db, beta_chat, utcnow(), "beta-now")
    add_arrived(mongo_db, shared, utcnow(), "shared-now")  # in the shared pass
    settle_arrivals()

    # stats and state: the shared chat's messages are nobody's.
    for workspace, expected in ((alpha, 3), (beta, 1)):
        stats = _json(cli, ["stats", str(workspace)], env)
        assert stats["workspace"]["messages"]["total"] == expected, (workspace, stats["workspace"]["messages"])
    waiting = {entry["workspace_id"]: entry["waiting_messages"] for entry in _json(cli, ["state"], env)["workspaces"]}
    assert waiting == {str(alpha): 3, str(beta): 1}

    # A manual export reads the workspaces' chats the same way.
    manual = _json(cli, ["export", "--workspace", str(alpha), "--hours", "96", "--dry-run"], env)
    assert [ws["message_count"] for ws in manual["workspaces"]] == [3]

    # The scheduled run: Alpha by its own path, Beta from the pass; the shared chat's messages go to nobody,
    # and each is counted once as ambiguous_chat (the pass counts what it read, Alpha's path what lies before).
    run = _json(cli, ["export"], env)
    mails = {mail.rcpt_tos[0]: mail for mail in smtp_server.messages}
    assert set(mails) == {"alpha@own.test", "beta@own.test"}
    assert sorted(mailed_contents([mails["alpha@own.test"]])) == ["alpha-backlog", "alpha-now", "alpha-string-chat-id"]
    assert mailed_contents([mails["beta@own.test"]]) == ["beta-now"]
    by_id = {ws["workspace_id"]: ws for ws in run["workspaces"]}
    assert by_id[str(alpha)]["message_count"] == 3 and by_id[str(beta)]["message_count"] == 1
    assert by_id[str(alpha)]["anomalies"] == {"ambiguous_chat": 1, "string_chat_id": 1}, (
        "Alpha's own path counts the shared backlog message"
    )
    assert run["run_anomalies"] == {"ambiguous_chat": 1}, "the pass counts the one it read"
    assert run["anomalies"]["ambiguous_chat"] == 2


def test_a_workspace_stored_twice_is_exported_once_and_named_by_the_run_and_health(
    mongo_db, make_env, cli, smtp_server
):
    tenant = add_workspace(mongo_db, "Twice Tenant")
    mongo_db.workspaces.insert_one({"_id": str(tenant), "name": "Twice Tenant (copy)", "status": "active"})
    other = add_workspace(mongo_db, "Once Tenant")
    by_object_id = add_chat(mongo_db, tenant, customer_phone="+4915100000001")
    by_string = add_chat(mongo_db, str(tenant), customer_phone="+4915100000002")
    other_chat = add_chat(mongo_db, other)
    env = make_env(**{f"WORKSPACE_{tenant}_EMAIL": "twice@own.test", f"WORKSPACE_{other}_EMAIL": "once@own.test"})
    add_arrived(mongo_db, by_object_id, utcnow() - timedelta(minutes=3), "via-objectid-chat")
    add_arrived(mongo_db, by_string, utcnow() - timedelta(minutes=3), "via-string-chat")
    add_arrived(mongo_db, other_chat, utcnow() - timedelta(minutes=3), "other")
    settle_arrivals()

    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    run = parse_json(result)
    assert [ws["workspace_id"] for ws in run["workspaces"]].count(str(tenant)) == 1, "one workspace, not two"
    twice = next(ws for ws in run["workspaces"] if ws["workspace_id"] == str(tenant))
    assert twice["outcome"] == "completed" and twice["message_count"] == 2
    assert twice["workspace_name"] == "Twice Tenant", "the ObjectId document is the workspace"
    mails = {mail.rcpt_tos[0]: mail for mail in smtp_server.messages}
    assert len(smtp_server.messages) == 2
    assert sorted(mailed_contents([mails["twice@own.test"]])) == ["via-objectid-chat", "via-string-chat"]
    [warning] = [w for w in run["warnings"] if w["kind"] == "duplicate_workspace"]
    assert warning["workspace_id"] == str(tenant)
    assert "stored 2 times" in warning["message"] and "delete the other document" in warning["message"]

    plain = cli(["export"], env=env)  # the next run has nothing new, and still names it
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert any(
        "WARNING" in line and str(tenant) in line and "stored 2 times" in line for line in plain.stdout.splitlines()
    ), plain.stdout
    assert len(smtp_server.messages) == 2, "nothing sent twice"
    workers = parse_json(cli(["export", "--workers", "2", "--json"], env=env))
    assert [w["workspace_id"] for w in workers["warnings"] if w["kind"] == "duplicate_workspace"] == [str(tenant)], (
        "named once, by the worker that exports it"
    )

    duplicates = health_checks(cli(["health", "--json"], env=env))["duplicate_workspaces"]
    assert duplicates["status"] == "warning" and str(tenant) in duplicates["reason"]
    assert [entry["id"] for entry in duplicates["details"]["workspaces"]] == [str(tenant)]
    assert [doc["id_type"] for doc in duplicates["details"]["workspaces"][0]["documents"]] == ["ObjectId", "string"]
