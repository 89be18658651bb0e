"""Each workspace in its own time zone: WORKSPACE_<ID>_TIMEZONE, else EXPORT_TIMEZONE_FIELD, else EXPORT_TIMEZONE.

The zone sets the workspace's Timestamp cells, its file names and its email text; another
workspace of the same run keeps the global zone.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from helpers import attachments, parse_json, plain_body, sheet_rows
from seeding import add_chat, add_messages, add_workspace, utcnow

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
FIELD = "settings.timezone"


def _tenant(db: Any, name: str, zone_field: object = None) -> tuple[str, datetime]:
    """An active workspace (its zone in FIELD when given) with one message; its id and the message's time."""
    document: dict[str, Any] = {"name": name, "status": "active"}
    if zone_field is not None:
        document["settings"] = {"timezone": zone_field}
    workspace_id = db.workspaces.insert_one(document).inserted_id
    stamp = (utcnow() - timedelta(minutes=3)).replace(microsecond=0)
    add_messages(db, add_chat(db, workspace_id), [{"content": f"hello {name}", "timestamp": stamp}])
    return str(workspace_id), stamp


def _addresses(*workspace_ids: str) -> dict[str, str]:
    return {f"WORKSPACE_{workspace_id}_EMAIL": f"team{n}@zones.test" for n, workspace_id in enumerate(workspace_ids)}


def _mail_of(smtp_server: Any, workspace_id: str) -> Any:
    [message] = [m.message() for m in smtp_server.messages if workspace_id in plain_body(m.message())]
    return message


def _assert_in_zone(message: Any, stamp: datetime, zone: ZoneInfo, started_at: datetime) -> None:
    [(file_name, _, payload)] = attachments(message)
    [row] = sheet_rows(payload)
    assert row[3] == stamp.astimezone(zone).replace(tzinfo=None), f"Timestamp cell not in {zone.key}"
    # The file name and the subject carry the run's time in the workspace's zone.
    local_run = started_at.astimezone(zone)
    assert local_run.strftime("_%Y-%m-%d_%H-%M") in file_name, (file_name, zone.key)
    assert message["Subject"].endswith(local_run.strftime("%Y-%m-%d %H:%M")), message["Subject"]
    body = plain_body(message)
    assert f"({zone.key})" in body
    assert f"Times in the workbook's Timestamp column are in {zone.key}." in body


def test_a_workspace_variable_puts_cells_file_name_and_email_in_that_zone(mongo_db, make_env, cli, smtp_server):
    new_york, stamp_ny = _tenant(mongo_db, "Diner NYC")
    kolkata, stamp_in = _tenant(mongo_db, "Chai Kolkata")
    env = make_env(
        EXPORT_TIMEZONE="Asia/Kolkata",
        **{f"WORKSPACE_{new_york}_TIMEZONE": "America/New_York"},
        **_addresses(new_york, kolkata),
    )
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    started_at = datetime.fromisoformat(parse_json(result)["started_at"])
    _assert_in_zone(_mail_of(smtp_server, new_york), stamp_ny, NEW_YORK, started_at)
    _assert_in_zone(_mail_of(smtp_server, kolkata), stamp_in, KOLKATA, started_at)


def test_the_document_field_sets_the_zone_and_the_variable_wins_over_it(mongo_db, make_env, cli, smtp_server):
    from_field, stamp_field = _tenant(mongo_db, "Field Tenant", "America/New_York")
    overridden, stamp_over = _tenant(mongo_db, "Overridden Tenant", "America/New_York")
    plain, stamp_plain = _tenant(mongo_db, "Plain Tenant")
    env = make_env(
        EXPORT_TIMEZONE="Asia/Kolkata",
        EXPORT_TIMEZONE_FIELD=FIELD,
        **{f"WORKSPACE_{overridden}_TIMEZONE": "UTC"},
        **_addresses(from_field, overridden, plain),
    )
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    started_at = datetime.fromisoformat(parse_json(result)["started_at"])
    _assert_in_zone(_mail_of(smtp_server, from_field), stamp_field, NEW_YORK, started_at)
    _assert_in_zone(_mail_of(smtp_server, overridden), stamp_over, ZoneInfo("UTC"), started_at)
    _assert_in_zone(_mail_of(smtp_server, plain), stamp_plain, KOLKATA, started_at)


@pytest.mark.parametrize(("value", "shown"), [("Mars/Olympus_Mons", "'Mars/Olympus_Mons'"), (42, "type int")])
def test_an_invalid_zone_in_a_document_fails_only_that_workspace(mongo_db, make_env, cli, smtp_server, value, shown):
    broken, _ = _tenant(mongo_db, "Broken Zone", value)
    fine, _ = _tenant(mongo_db, "Fine Zone", "America/New_York")
    env = make_env(EXPORT_TIMEZONE_FIELD=FIELD, **_addresses(broken, fine))
    result = cli(["export", "--json"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    outcomes = {ws["workspace_id"]: ws for ws in parse_json(result)["workspaces"]}
    assert outcomes[fine]["outcome"] == "completed"
    assert outcomes[broken]["outcome"] == "failed"
    reason = outcomes[broken]["reason"]
    assert f"{FIELD} of workspace {broken} holds" in reason and shown in reason, reason
    assert f"set WORKSPACE_{broken}_TIMEZONE" in reason
    assert len(smtp_server.messages) == 1
    # Nothing moved for the failed one: the next good run delivers it.
    assert "cursor" not in (mongo_db.export_state.find_one({"_id": broken}) or {})


def test_an_invalid_zone_variable_is_a_configuration_error(mongo_db, make_env, cli, smtp_server):
    workspace_id = str(add_workspace(mongo_db, "Tenant"))
    variable = f"WORKSPACE_{workspace_id}_TIMEZONE"
    env = make_env(**{variable: "Mars/Base"}, **_addresses(workspace_id))
    for command in (["config"], ["export"], ["export", "--dry-run"]):
        result = cli(command, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert variable in result.stdout + result.stderr
        assert "is not a known IANA time zone" in result.stdout + result.stderr
    assert smtp_server.messages == []


def test_a_manual_export_uses_the_workspace_zone(mongo_db, make_env, cli, smtp_server):
    workspace_id, stamp = _tenant(mongo_db, "Manual NYC")
    env = make_env(**{f"WORKSPACE_{workspace_id}_TIMEZONE": "America/New_York"}, **_addresses(workspace_id))
    result = cli(["export", "--workspace", workspace_id, "--hours", "1", "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [message] = [m.message() for m in smtp_server.messages]
    [(_, _, payload)] = attachments(message)
    assert sheet_rows(payload)[0][3] == stamp.astimezone(NEW_YORK).replace(tzinfo=None)
    assert "(America/New_York)" in plain_body(message)


def test_a_resent_export_keeps_the_workspace_zone(mongo_db, make_env, cli, smtp_server):
    workspace_id, stamp = _tenant(mongo_db, "Resent NYC")
    env = make_env(**{f"WORKSPACE_{workspace_id}_TIMEZONE": "America/New_York"}, **_addresses(workspace_id))
    assert cli(["export"], env=env).returncode == 0
    entry = mongo_db.export_logs.find_one({"workspace_id": workspace_id, "status": "completed"})
    resent = cli(["resend", str(entry["_id"])], env=env)
    assert resent.returncode == 0, resent.stdout + resent.stderr
    original, again = (m.message() for m in smtp_server.messages)
    for message in (original, again):
        [(_, _, payload)] = attachments(message)
        assert sheet_rows(payload)[0][3] == stamp.astimezone(NEW_YORK).replace(tzinfo=None)
        assert "(America/New_York)" in plain_body(message)
