"""`wa-export stats` and `wa-export logs`: the installed CLI, real MongoDB."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

from helpers import parse_json
from seeding import add_chat, add_messages, add_workspace, utcnow
from wa_export.export.email_text import status_sentence
from wa_export.export.rows import STATUSES

TOKYO = ZoneInfo("Asia/Tokyo")
WORKSPACE_PHONE = "+15550009999"
CUSTOMER_PHONE = "+4915199887766"


def _at(day: datetime, hour: int, minute: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=UTC)


def _seed_stats(db: Any) -> dict[str, Any]:
    """Workspace "Acme" with messages around a Tokyo midnight, plus noise that must not count."""
    now = utcnow()
    today = now.astimezone(TOKYO).date()
    boundary_day = today - timedelta(days=3)  # a UTC date; 15:00 UTC on it is 00:00 in Tokyo next day
    acme = add_workspace(db, "Acme")
    other = add_workspace(db, "Other Co")
    add_workspace(db, "Gone Inc", status="inactive")
    chat = add_chat(db, acme, phone_number=WORKSPACE_PHONE, customer_phone=CUSTOMER_PHONE)
    # Some platform writers store workspace_id as a string: those chats count too.
    string_chat = add_chat(db, str(acme))  # type: ignore[arg-type]
    other_chat = add_chat(db, other)

    base = datetime(boundary_day.year, boundary_day.month, boundary_day.day, tzinfo=UTC)
    add_messages(
        db,
        chat,
        [
            # Tokyo day `boundary_day` (23:59 local): 2 received, 1 AI.
            {"direction": "incoming", "timestamp": _at(base, 14, 59)},
            {"direction": "incoming", "timestamp": _at(base, 14, 58)},
            {"direction": "outgoing", "is_ai_generated": True, "timestamp": _at(base, 14, 59) + timedelta(seconds=30)},
            # Tokyo day after (00:01 local): 2 by human (one without the flag), 1 AI.
            {"direction": "outgoing", "is_ai_generated": False, "timestamp": _at(base, 15, 1)},
            {"direction": "outgoing", "is_ai_generated": None, "timestamp": _at(base, 15, 2)},
            {"direction": "outgoing", "is_ai_generated": True, "timestamp": _at(base, 15, 3)},
            # Outside the 7 days: never counted.
            {"direction": "incoming", "timestamp": now - timedelta(days=9)},
        ],
    )
    recent = [now - timedelta(minutes=5), now - timedelta(minutes=6)]
    add_messages(db, string_chat, [{"direction": "incoming", "timestamp": moment} for moment in recent])
    add_messages(db, other_chat, [{"direction": "incoming", "timestamp": _at(base, 14, 59)} for _ in range(4)])

    last_success = now - timedelta(hours=2)
    logs = [
        (acme, "completed", 5, last_success),
        (acme, "completed", 7, now - timedelta(days=2)),
        (acme, "failed", 3, now - timedelta(hours=1)),
        (acme, "completed", 99, now - timedelta(days=30)),  # before the period: only "last success" may see it
        (other, "completed", 4, now - timedelta(hours=3)),
    ]
    db.export_logs.insert_many(
        [
            {"workspace_id": str(workspace), "status": status, "message_count": count, "created_at": created}
            for workspace, status, count, created in logs
        ]
    )
    return {
        "acme": acme,
        "other": other,
        "today": today,
        "boundary_day": boundary_day,
        "last_success": last_success,
        "recent_days": [moment.astimezone(TOKYO).date() for moment in recent],
    }


def _day(date: Any, received: int = 0, ai: int = 0, human: int = 0) -> dict[str, Any]:
    return {
        "date": date.isoformat(),
        "received": received,
        "sent_via_ai": ai,
        "sent_by_human": human,
        "total": received + ai + human,
    }


BOX_CHARACTERS = set("─━│┃┌┐└┘├┤┬┴┼╭╮╰╯═║╔╗╚╝╷╵╶╴")


def assert_plain_lines(stdout: str) -> None:
    """without a terminal, plain lines: no box drawing, no escape codes."""
    assert "\x1b[" not in stdout
    assert not BOX_CHARACTERS & set(stdout), stdout


def test_stats_counts_per_local_day_and_status(mongo_db, make_env, cli):
    seeded = _seed_stats(mongo_db)
    acme, today, boundary = seeded["acme"], seeded["today"], seeded["boundary_day"]
    env = make_env(EXPORT_TIMEZONE="Asia/Tokyo", **{f"WORKSPACE_{acme}_EMAIL": "ops@acme.test"})

    result = cli(["stats", str(acme), "--json"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    assert document["timezone"] == "Asia/Tokyo" and document["days"] == 7
    expected = {day: _day(day) for day in (today - timedelta(days=offset) for offset in range(6, -1, -1))}
    expected[boundary] = _day(boundary, received=2, ai=1)
    expected[boundary + timedelta(days=1)] = _day(boundary + timedelta(days=1), ai=1, human=2)
    for recent_day in seeded["recent_days"]:  # "today", unless the test runs just after Tokyo midnight
        expected[recent_day]["received"] += 1
        expected[recent_day]["total"] += 1
    workspace = document["workspace"]
    assert workspace["per_day"] == list(expected.values())
    assert workspace["messages"] == {"received": 4, "sent_via_ai": 2, "sent_by_human": 2, "total": 8}
    assert workspace["exports"]["completed"] == 2
    assert workspace["exports"]["failed"] == 1
    assert workspace["exports"]["messages_exported"] == 12
    assert datetime.fromisoformat(workspace["exports"]["last_success"]) == seeded["last_success"]
    assert workspace["address_configured"] is True

    # The same data in UTC: the two sides of Tokyo's midnight fall on one day.
    in_utc = parse_json(cli(["stats", str(acme), "--json"], env=make_env(EXPORT_TIMEZONE="UTC")))
    utc_days = {day["date"]: day["total"] for day in in_utc["workspace"]["per_day"]}
    assert utc_days[boundary.isoformat()] == 6

    human = cli(["stats", str(acme)], env=env)
    assert human.returncode == 0, human.stderr
    bars = {
        day: next(line for line in human.stdout.splitlines() if f"{day:%a} {day.isoformat()}" in line).count("█")
        for day in expected
    }
    # Bars are scaled to the busiest day (3 messages = 24 blocks); empty days have none.
    assert bars == {day: {0: 0, 1: 8, 2: 16, 3: 24}[counts["total"]] for day, counts in expected.items()}
    assert "2 completed (12 messages), 1 failed" in human.stdout
    assert CUSTOMER_PHONE not in human.stdout and WORKSPACE_PHONE not in human.stdout
    assert_plain_lines(human.stdout)


def test_stats_names_statuses_as_the_workbook_and_email_do(mongo_db, make_env, cli):
    acme = _seed_stats(mongo_db)["acme"]
    human = cli(["stats", str(acme)], env=make_env())
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    [header] = [line for line in lines if line.split()[:1] == ["Day"]]
    assert header.split() == ["Day", *STATUSES, "Total", "Trend"]
    assert status_sentence(STATUSES) in lines  # what each value means, in the email's words


def test_stats_overview_and_errors(mongo_db, make_env, cli):
    seeded = _seed_stats(mongo_db)
    acme, other = seeded["acme"], seeded["other"]
    env = make_env(EXPORT_TIMEZONE="Asia/Tokyo", **{f"WORKSPACE_{acme}_EMAIL": "ops@acme.test"})

    overview = cli(["stats", "--days", "10", "--json"], env=env)
    assert overview.returncode == 0, overview.stderr
    rows = {row["workspace_name"]: row for row in parse_json(overview)["workspaces"]}
    assert set(rows) == {"Acme", "Other Co"}, "inactive workspaces are not listed"
    assert rows["Acme"]["messages"]["total"] == 9  # the 9-day-old message is inside 10 days
    assert rows["Acme"]["address_configured"] is True and rows["Other Co"]["address_configured"] is False
    assert rows["Other Co"]["messages"] == {"received": 4, "sent_via_ai": 0, "sent_by_human": 0, "total": 4}
    assert rows["Other Co"]["exports"]["completed"] == 1 and rows["Acme"]["exports"]["failed"] == 1

    plain = cli(["stats"], env=env)
    assert plain.returncode == 0, plain.stderr
    assert "Acme" in plain.stdout and str(other) in plain.stdout
    assert_plain_lines(plain.stdout)
    # Not a terminal: one greppable line per workspace, its name and id together.
    (other_line,) = [line for line in plain.stdout.splitlines() if str(other) in line]
    assert "Other Co" in other_line and other_line.split()[-1] == "no"
    assert "2 active workspaces" in plain.stdout and "1 without an address" in plain.stdout

    unknown = cli(["stats", "0123456789abcdef01234567"], env=env)
    assert unknown.returncode == 2
    assert unknown.stdout == "" and len(unknown.stderr.strip().splitlines()) == 1
    assert "No workspace with id 0123456789abcdef01234567" in unknown.stderr
    malformed = cli(["stats", "not-an-id", "--json"], env=env)
    assert malformed.returncode == 2 and parse_json(malformed)["ok"] is False
    bad_days = cli(["stats", "--days", "400"], env=env)
    assert bad_days.returncode == 2 and "Invalid value for '--days'" in bad_days.stderr and "366" in bad_days.stderr


def test_stats_says_one_of_a_thing_in_the_singular(mongo_db, make_env, cli):
    acme = add_workspace(mongo_db, "Acme")
    now = utcnow()
    add_messages(mongo_db, add_chat(mongo_db, acme), [{"direction": "incoming", "timestamp": now - timedelta(hours=1)}])
    mongo_db.export_logs.insert_one(
        {
            "workspace_id": str(acme),
            "status": "completed",
            "message_count": 1,
            "created_at": now - timedelta(minutes=30),
        }
    )

    overview = cli(["stats"], env=make_env())
    assert overview.returncode == 0, overview.stderr
    assert "1 active workspace, 1 message, 1 export, 0 failed" in overview.stdout
    single = cli(["stats", str(acme)], env=make_env())
    assert single.returncode == 0, single.stderr
    assert "1 completed (1 message), 0 failed" in single.stdout


def _seed_logs(db: Any, acme: ObjectId, other: ObjectId) -> datetime:
    base = datetime(2026, 3, 10, 1, 0, tzinfo=UTC)
    entries = [
        (acme, "completed", 0, None),
        (other, "failed", 15, "SMTP server refused the recipient"),
        (acme, "failed", 30, "authentication failed"),
        (acme, "completed", 45, None),
        (other, "completed", 60, None),
    ]
    db.export_logs.insert_many(
        [
            {
                "workspace_id": str(workspace),
                "export_type": "whatsapp_messages",
                "message_count": index + 1,
                "file_path": f"/srv/exports/x/x_whatsapp_messages_{index}.xlsx" if status == "completed" else None,
                "email_sent_to": "ops@acme.test",
                "status": status,
                "error_message": error,
                "created_at": base + timedelta(minutes=minutes),
                "trigger": "scheduled",
                "window_start": base + timedelta(minutes=minutes - 15),
                "window_end": base + timedelta(minutes=minutes),
            }
            # Inserted in shuffled order: the command must sort, not rely on insertion.
            for index, (workspace, status, minutes, error) in sorted(enumerate(entries), key=lambda e: (e[0] * 3) % 5)
        ]
    )
    db.system_logs.insert_many(
        [
            {"event_type": "success", "message": "run one", "timestamp": base, "service": "excel_export_scheduler"},
            {
                "event_type": "cleanup",
                "message": "cleaned",
                "timestamp": base + timedelta(hours=2),
                "service": "excel_export_scheduler",
            },
            {
                "event_type": "error",
                "message": "run two",
                "timestamp": base + timedelta(hours=1),
                "service": "excel_export_scheduler",
            },
            {
                "event_type": "success",
                "message": "not ours",
                "timestamp": base + timedelta(hours=3),
                "service": "another_service",
            },
        ]
    )
    return base


def test_logs_newest_first_with_filters(mongo_db, make_env, cli):
    acme = add_workspace(mongo_db, "Acme")
    other = add_workspace(mongo_db, "Other Co")
    _seed_logs(mongo_db, acme, other)
    env = make_env(EXPORT_TIMEZONE="Asia/Tokyo")

    everything = parse_json(cli(["logs", "--json"], env=env))
    assert [entry["message_count"] for entry in everything["entries"]] == [5, 4, 3, 2, 1]
    assert everything["entries"][0]["workspace_name"] == "Other Co"
    assert everything["entries"][2]["error"] == "authentication failed"

    limited = parse_json(cli(["logs", "--limit", "2", "--json"], env=env))
    assert [entry["message_count"] for entry in limited["entries"]] == [5, 4]

    failed = parse_json(cli(["logs", "--status", "failed", "--json"], env=env))
    assert [(entry["message_count"], entry["status"]) for entry in failed["entries"]] == [(3, "failed"), (2, "failed")]

    acme_only = parse_json(cli(["logs", str(acme), "--json"], env=env))
    assert [entry["message_count"] for entry in acme_only["entries"]] == [4, 3, 1]

    system = parse_json(cli(["logs", "--system", "--json"], env=env))
    assert [(e["event_type"], e["message"]) for e in system["entries"]] == [
        ("cleanup", "cleaned"),
        ("error", "run two"),
        ("success", "run one"),
    ]

    human = cli(["logs"], env=env)
    assert human.returncode == 0, human.stderr
    # 01:00 UTC is 10:00 in Tokyo; the newest entry (02:00 UTC) is shown as 11:00 local, first.
    assert human.stdout.index("03-10 11:00") < human.stdout.index("03-10 10:00")
    assert "authentication failed" in human.stdout and "Other Co" in human.stdout
    assert_plain_lines(human.stdout)
    (failed_line,) = [line for line in human.stdout.splitlines() if "authentication failed" in line]
    assert "03-10" in failed_line and "failed" in failed_line.replace("authentication failed", "")
    assert_plain_lines(cli(["logs", "--system"], env=env).stdout)


def test_logs_usage_errors(mongo_db, make_env, cli):
    add_workspace(mongo_db, "Another")  # the platform's database: only the id is unknown
    env = make_env()
    for args, fragment in [
        (["logs", "--status", "pending"], "--status must be one of completed, failed"),
        (["logs", "--system", "--status", "failed"], "--system shows the tool's own events"),
        (["logs", "0123456789abcdef01234567"], "No workspace with id 0123456789abcdef01234567"),
    ]:
        result = cli(args, env=env)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert fragment in result.stderr and "Traceback" not in result.stderr


def test_logs_show_a_real_export_run(mongo_db, make_env, cli, smtp_server):
    workspace = add_workspace(mongo_db, "Live Shop")
    chat = add_chat(mongo_db, workspace)
    add_messages(
        mongo_db,
        chat,
        [
            {"timestamp": utcnow() - timedelta(minutes=5)},
            {"direction": "outgoing", "timestamp": utcnow() - timedelta(minutes=4)},
        ],
    )
    env = make_env(**{f"WORKSPACE_{workspace}_EMAIL": "team@live.test"})
    exported = cli(["export"], env=env)
    assert exported.returncode == 0, exported.stdout + exported.stderr

    [entry] = parse_json(cli(["logs", str(workspace), "--json"], env=env))["entries"]
    assert entry["status"] == "completed" and entry["trigger"] == "scheduled"
    assert entry["message_count"] == 2 and entry["recipients"] == "team@live.test"
    assert entry["file_path"].endswith(".xlsx") and entry["window_start"] < entry["window_end"]
    events = parse_json(cli(["logs", "--system", "--json"], env=env))["entries"]
    assert events[0]["event_type"] == "success" and "scheduled export run" in events[0]["message"]


def test_stats_over_a_year_groups_days_and_keeps_every_days_keys(mongo_db, make_env, cli):
    acme = add_workspace(mongo_db, "Acme")
    chat = add_chat(mongo_db, acme)
    now = utcnow()
    add_messages(
        mongo_db,
        chat,
        [{"direction": "incoming", "timestamp": now - timedelta(days=3)}, {"direction": None, "timestamp": now}],
    )
    env = make_env(**{f"WORKSPACE_{acme}_EMAIL": "ops@acme.test"})

    document = parse_json(cli(["stats", str(acme), "--days", "366", "--json"], env=env))
    per_day = document["workspace"]["per_day"]
    assert len(per_day) == 366 and all(day.keys() == per_day[0].keys() for day in per_day)
    assert sum(day["unknown"] for day in per_day) == 1  # a message without a direction, on one day; 0 on the others

    single = cli(["stats", str(acme), "--days", "366"], env=env)
    assert single.returncode == 0, single.stderr
    assert "messages per 12 days" in single.stdout and "+11d" in single.stdout  # 31 rows at most: one screen
    assert len(single.stdout.splitlines()) < 60
    overview = cli(["stats", "--days", "366"], env=env)
    assert overview.returncode == 0, overview.stderr
    assert max(len(line) for line in overview.stdout.splitlines()) < 200  # the trend is 14 characters at most
