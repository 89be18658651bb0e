"""Every time a person reads says which zone it is in: each time carries its zone, or the output states
its one zone once and every time in it is in that zone. Checked over every command's human output,
under cron (plain lines) and on a terminal, with EXPORT_TIMEZONE far from UTC."""

from __future__ import annotations

import os
import re
import time
from datetime import timedelta

import pytest

from helpers import run_on_a_terminal
from seeding import add_chat, add_messages, add_workspace, utcnow

ZONE = "Asia/Kolkata"  # UTC+05:30: a time shown in UTC by mistake is off by a visible 5 h 30 min
# A time of day, with its date and seconds when they are there (not the digits of an offset like +05:30,
# nor a schedule's daily@08:00,17:30).
TIME = re.compile(r"(?<![\w:.+@,-])(?:\d{4}-\d{2}-\d{2}[ T]|\d{2}-\d{2} )?\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?!\d)")
# What names a zone right after a time: an offset or Z attached to it, or a zone's name after a space.
ZONE_MARK = re.compile(r"^(?:(?P<offset>Z|[+-]\d{2}:?\d{2})|\s\(?(?P<name>[A-Z][A-Za-z_]+/[A-Za-z_]+|UTC|GMT)\b)")


def _unzoned_times(text: str, other_zones: tuple[str, ...] = ()) -> list[str]:
    """The times in `text` that no zone follows; fails on a time marked with a zone not ZONE or `other_zones`."""
    unzoned = []
    for match in TIME.finditer(text):
        after = ZONE_MARK.match(text[match.end() :])
        if after is None:
            unzoned.append(match.group(0))
        else:
            mark = after.group("name") or after.group("offset")
            allowed = (ZONE, "+05:30", "+0530", *other_zones)
            assert mark in allowed, f"{match.group(0)} shown in {mark}, not {ZONE}:\n{text}"
    return unzoned


def _assert_times_name_their_zone(command: list[str], text: str) -> None:
    unzoned = _unzoned_times(text)
    if unzoned:  # allowed only in an output that states its one zone
        assert ZONE in text, f"`wa-export {' '.join(command)}` shows {unzoned} without a zone:\n{text}"


def _seed(mongo_db):
    workspace_id = add_workspace(mongo_db, "Mumbai Tea House")
    chat_id = add_chat(mongo_db, workspace_id)
    start = utcnow() - timedelta(minutes=10)
    add_messages(
        mongo_db, chat_id, [{"content": f"chai {n}", "timestamp": start + timedelta(seconds=n)} for n in range(3)]
    )
    return str(workspace_id)


COMMANDS = [
    ["export"],
    ["export", "--dry-run"],
    ["export", "--hours", "1", "--no-email"],
    ["stats"],
    ["stats", "{id}"],
    ["logs"],
    ["logs", "--system"],
    ["state"],
    ["state", "{id}"],
    ["state", "{id}", "--move-to", "{past}"],
    ["health"],
    ["cleanup", "--dry-run"],
    ["config"],
    ["test-email", "--to", "ops@example.com"],
    ["logs", "--system"],  # now with the cursor move: its message's times, under "times in <zone>"
]


def test_every_command_names_the_zone_of_its_times_under_cron(mongo_db, make_env, cli, smtp_server):
    workspace_id = _seed(mongo_db)
    env = make_env(EXPORT_TIMEZONE=ZONE, **{f"WORKSPACE_{workspace_id}_EMAIL": "tea@example.com"})
    for command in COMMANDS:
        past = (utcnow() - timedelta(minutes=20)).isoformat()
        args = [part.format(id=workspace_id, past=past) for part in command]
        result = cli(args, env=env)
        assert result.returncode in (0, 1), (args, result.stdout, result.stderr)
        _assert_times_name_their_zone(args, result.stdout + result.stderr)
    [test_email] = [m.message() for m in smtp_server.messages if "test email" in m.message()["Subject"]]
    assert _unzoned_times(test_email["Subject"]) == [], test_email["Subject"]  # a subject has no zone line


@pytest.mark.parametrize(
    "command", [["export"], ["stats"], ["logs"], ["logs", "--system"], ["state"], ["health"], ["cleanup", "--dry-run"]]
)
def test_every_table_on_a_terminal_names_the_zone_of_its_times(command, mongo_db, make_env, cli, tmp_path):
    workspace_id = _seed(mongo_db)
    env = make_env(EXPORT_TIMEZONE=ZONE, **{f"WORKSPACE_{workspace_id}_EMAIL": "tea@example.com"})
    if command != ["export"]:
        assert cli(["export"], env=env).returncode == 0
    for workbook in (tmp_path / "exports").rglob("*.xlsx"):  # old enough for cleanup to list
        month_ago = time.time() - 30 * 86400
        os.utime(workbook, (month_ago, month_ago))
    code, screen = run_on_a_terminal(command, env, str(tmp_path))
    assert code in (0, 1), screen
    _assert_times_name_their_zone(command, re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen))


def test_a_workspace_in_its_own_zone_shows_its_times_named(mongo_db, make_env, cli, tmp_path, smtp_server):
    # Two zones in one output: a time in the workspace's own zone names it; unnamed ones are EXPORT_TIMEZONE's,
    # which the output states.
    local = _seed(mongo_db)
    deli = add_workspace(mongo_db, "NY Deli")
    add_messages(
        mongo_db, add_chat(mongo_db, deli), [{"content": "bagel", "timestamp": utcnow() - timedelta(minutes=5)}]
    )
    env = make_env(
        EXPORT_TIMEZONE=ZONE,
        **{
            f"WORKSPACE_{local}_EMAIL": "tea@example.com",
            f"WORKSPACE_{deli}_EMAIL": "deli@example.com",
            f"WORKSPACE_{deli}_TIMEZONE": "America/New_York",
            f"WORKSPACE_{deli}_SCHEDULE": "daily@08:00",
        },
    )
    assert cli(["export"], env=env).returncode == 0
    outputs = {}
    for command in (["export"], ["logs"], ["state"], ["state", str(deli)], ["stats"], ["health"]):
        result = cli(command, env=env)
        outputs[command[0]] = result.stdout
        unzoned = _unzoned_times(result.stdout, ("America/New_York",))
        assert not unzoned or ZONE in result.stdout, (command, result.stdout)
    for command in (["export"], ["state"]):
        code, screen = run_on_a_terminal(command, env, str(tmp_path), columns=160)
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen)
        unzoned = _unzoned_times(text, ("America/New_York",))
        assert code == 0 and (not unzoned or ZONE in text), (command, text)
    # The not-due reason names the workspace's own zone; state names it with the schedule.
    assert "08:00 America/New_York" in outputs["export"], outputs["export"]
    assert "time_zone=America/New_York" in outputs["state"] and "schedule=daily@08:00" in outputs["state"]
