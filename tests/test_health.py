"""`wa-export health` against real MongoDB and SMTP servers.

The installed CLI is run for the end-to-end paths (healthy setup, every failure
line at once, unreachable MongoDB); each failure mode on its own -- "this one
problem makes health exit 1" -- is checked with `run_health` in process, which
is the function the CLI calls, to keep the suite fast (a CLI start costs ~1 s).
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from helpers import parse_json
from seeding import add_chat, add_messages, add_workspace, utcnow
from servers import free_port
from wa_export.commands.health import (
    MIN_FREE_BYTES,
    MIN_FREE_FRACTION,
    HealthReport,
    run_health,
)
from wa_export.settings import Settings, load_settings

ALL_CHECKS = [
    "mongodb",
    "smtp_settings",
    "export_dir",
    "workspace_addresses",
    "workbook_passwords",
    "duplicate_workspaces",
    "export_folders",
    "indexes",
    "arrival_order",
    "scheduled_runs",
    "workspace_schedules",
    "failed_exports",
    "possible_duplicates",
]
INDEX_COMMANDS = [
    "db.chats.createIndex({ workspace_id: 1 })",
    "db.messages.createIndex({ chat_id: 1, _id: 1 })",
    "db.messages.createIndex({ chat_id: 1, timestamp: 1 })",
]


def _scheduled_run_event(db: Any, minutes_ago: float, trigger: str = "scheduled") -> None:
    """The summary event the exporter writes at the end of each run (the fields health relies on)."""
    db.system_logs.insert_one(
        {
            "event_type": "success",
            "message": "run",
            "service": "excel_export_scheduler",
            "kind": "export_run",
            "trigger": trigger,
            "timestamp": utcnow() - timedelta(minutes=minutes_ago),
        }
    )


def _healthy(db: Any, make_env: Any, cli: Any, *, real_run: bool = False, **overrides: Any) -> dict[str, str]:
    """Indexes, every active workspace with an address, a recent scheduled run, a writable dir."""
    db.chats.create_index([("workspace_id", 1)])
    db.messages.create_index([("chat_id", 1), ("_id", 1)])
    db.messages.create_index([("chat_id", 1), ("timestamp", 1)])
    db.export_logs.create_index([("attachment_sha256", 1)])
    acme = add_workspace(db, "Acme Corp")
    tech = add_workspace(db, "Tech Startup")
    add_workspace(db, "Old Tenant", status="inactive")  # inactive: needs no address
    add_messages(db, add_chat(db, acme), [{"content": "hi", "timestamp": utcnow() - timedelta(minutes=3)}])
    env = make_env(
        **{f"WORKSPACE_{acme}_EMAIL": "ops@acme.test", f"WORKSPACE_{tech}_EMAIL": "it@tech.test"}, **overrides
    )
    if real_run:  # the real `wa-export export` writes the scheduled-run event
        exported = cli(["export"], env=env)
        assert exported.returncode == 0, exported.stdout + exported.stderr
    else:
        _scheduled_run_event(db, minutes_ago=4)
    return env


def _checks(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in document["checks"]}


def _line(stdout: str, name: str) -> str:
    [line] = [line for line in stdout.splitlines() if f" {name}: " in line]
    return line


def _disk_is_roomy(path: Path) -> bool:
    usage = shutil.disk_usage(path)
    return usage.free >= MIN_FREE_BYTES and usage.free / usage.total >= MIN_FREE_FRACTION


def _settings(env: dict[str, str], tmp_path: Path) -> Settings:
    empty = tmp_path / "empty.env"  # never the cwd's .env
    empty.write_text("")
    return load_settings(env_file=empty, environ=env)


def _health(env: dict[str, str], tmp_path: Path, **kwargs: Any) -> tuple[HealthReport, dict[str, Any]]:
    report = run_health(_settings(env, tmp_path), **kwargs)
    return report, {check.name: check for check in report.checks}


def _unwritable_dir(tmp_path: Path) -> Path:
    # chmod does not stop root (CI runs as root), so block creation structurally:
    # a path component is a regular file, and mkdir fails for every user.
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a regular file")
    return blocker / "exports"


# --- the installed CLI ------------------------------------------------------------------


def test_all_ok_on_a_healthy_setup(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli, real_run=True)
    env["EXPORT_DIR"] = str(tmp_path / "exports" / "new")  # missing but creatable: fine
    result = cli(["health", "--json", "--smtp-login"], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    document = parse_json(result)
    checks = _checks(document)
    assert list(checks) == ["mongodb", "smtp_settings", "smtp_login", *ALL_CHECKS[2:]]
    expected_dir = "ok" if _disk_is_roomy(tmp_path) else "warning"  # a nearly full disk is a warning
    assert {name: c["status"] for name, c in checks.items()} == {
        **{name: "ok" for name in checks},
        "export_dir": expected_dir,
    }, document
    assert document["exit_code"] == 0 and document["recorded"] is True
    assert "can be created" in checks["export_dir"]["reason"]
    # The figures a monitor reads without parsing a sentence.
    assert checks["export_dir"]["details"]["path"] == env["EXPORT_DIR"]
    assert 0 < checks["export_dir"]["details"]["free_bytes"] <= checks["export_dir"]["details"]["total_bytes"]
    assert checks["scheduled_runs"]["details"]["threshold_minutes"] == 30
    assert datetime.fromisoformat(checks["scheduled_runs"]["details"]["last_run"]) <= datetime.now(UTC)
    assert not (tmp_path / "exports" / "new").exists()  # health creates nothing
    assert not list((tmp_path / "exports").glob(".wa-export-health-*"))  # the write probe is removed

    event = mongo_db.system_logs.find_one({"kind": "health_check"})
    assert event is not None and event["event_type"] == "health_check" and event["status"] == "ok"
    assert {c["name"] for c in event["checks"]} == set(checks)

    # Plain output (not a TTY, e.g. cron): one line per check with its status word.
    plain = cli(["health"], env=env)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    for name in ALL_CHECKS:
        assert _line(plain.stdout, name).split()[1] == ("ok" if name != "export_dir" else expected_dir)
    assert mongo_db.system_logs.count_documents({"kind": "health_check"}) == 2


def test_every_failure_has_its_line(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli, EXPORT_TIMEZONE="Asia/Kolkata", EXPORT_DIR=_unwritable_dir(tmp_path))
    stale = utcnow() - timedelta(hours=3)
    mongo_db.system_logs.update_many({"kind": "export_run"}, {"$set": {"timestamp": stale}})
    forgotten = add_workspace(mongo_db, "Forgotten Ltd")
    mongo_db.messages.drop_indexes()
    mongo_db.chats.drop_indexes()

    result = cli(["health"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    local = stale.astimezone(ZoneInfo("Asia/Kolkata")).strftime("%Y-%m-%d %H:%M")
    scheduled = _line(result.stdout, "scheduled_runs")
    assert scheduled.split()[1] == "failed" and f"No scheduled run since {local} Asia/Kolkata" in scheduled
    addresses = _line(result.stdout, "workspace_addresses")
    assert addresses.split()[1] == "failed" and "Forgotten Ltd" in addresses and str(forgotten) in addresses
    assert "Acme Corp" not in addresses
    export_dir = _line(result.stdout, "export_dir")
    assert export_dir.split()[1] == "failed" and env["EXPORT_DIR"] in export_dir
    indexes = _line(result.stdout, "indexes")
    assert indexes.split()[1] == "warning" and all(command in indexes for command in INDEX_COMMANDS)
    assert result.stdout.splitlines()[-1].split()[1] == "ERROR"


def test_unreachable_mongodb_fails_and_still_checks_the_rest(make_env, cli):
    env = make_env(MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true", MONGODB_TIMEOUT_SECONDS="1")
    result = cli(["health"], env=env)
    assert result.returncode == 1, result.stdout + result.stderr  # a failed check, like the others
    mongo = _line(result.stdout, "mongodb")
    assert mongo.split()[1] == "failed" and "unreachable" in mongo
    assert _line(result.stdout, "smtp_settings").split()[1] == "ok"
    assert _line(result.stdout, "export_dir").split()[1] in ("ok", "warning")
    assert _line(result.stdout, "scheduled_runs").split()[1] == "skipped"
    assert "Traceback" not in result.stderr


# --- each failure mode alone (in process) -----------------------------------------------


def test_healthy_baseline_in_process(mongo_db, make_env, cli, tmp_path):
    report, checks = _health(_healthy(mongo_db, make_env, cli), tmp_path)
    assert report.exit_code == 0 and report.count("failed") == 0, report.as_dict()


@pytest.mark.parametrize("trigger", ["manual_long_ago", "stale"])
def test_scheduled_runs_missing_or_stale(mongo_db, make_env, cli, tmp_path, trigger):
    env = _healthy(mongo_db, make_env, cli)
    mongo_db.system_logs.delete_many({})
    if trigger == "manual_long_ago":
        # In use for hours, never on schedule: manual runs are no proof the schedule works.
        _scheduled_run_event(mongo_db, minutes_ago=180, trigger="manual")
    if trigger == "stale":
        _scheduled_run_event(mongo_db, minutes_ago=31)  # interval 15: threshold 30 minutes
    report, checks = _health(env, tmp_path)
    assert report.exit_code == 1
    assert [c.name for c in report.checks if c.status == "failed"] == ["scheduled_runs"]
    expected = "No scheduled run since" if trigger == "stale" else "No scheduled run recorded, although wa-export"
    assert checks["scheduled_runs"].reason.startswith(expected)


@pytest.mark.parametrize("trigger", ["none", "manual_only"])
def test_fresh_install_without_a_scheduled_run_is_a_warning(mongo_db, make_env, cli, tmp_path, trigger):
    env = _healthy(mongo_db, make_env, cli)
    mongo_db.system_logs.delete_many({})
    if trigger == "manual_only":
        _scheduled_run_event(mongo_db, minutes_ago=1, trigger="manual")  # tried by hand, timer not yet enabled
    report, checks = _health(env, tmp_path)
    assert report.exit_code == 0, report.as_dict()
    assert checks["scheduled_runs"].status == "warning"
    assert checks["scheduled_runs"].reason.startswith("No scheduled run recorded yet")
    assert "crontab" in checks["scheduled_runs"].reason


def test_recent_scheduled_run_within_two_intervals_is_ok(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli, EXPORT_INTERVAL_MINUTES="60")
    mongo_db.system_logs.delete_many({})
    _scheduled_run_event(mongo_db, minutes_ago=100)  # 2 x 60 min = 120 min threshold
    report, checks = _health(env, tmp_path)
    assert checks["scheduled_runs"].status == "ok" and report.exit_code == 0


def test_unwritable_export_dir_alone_fails(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli)
    targets = [_unwritable_dir(tmp_path)]
    if sys.platform.startswith("linux"):
        targets.append(Path("/proc/wa-export-exports"))  # procfs refuses new files even to root
    for target in targets:
        report, checks = _health({**env, "EXPORT_DIR": str(target)}, tmp_path)
        assert report.exit_code == 1, target
        assert [c.name for c in report.checks if c.status == "failed"] == ["export_dir"]
        assert str(target) in checks["export_dir"].reason


def test_missing_address_alone_fails_and_names_the_workspace(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli)
    forgotten = add_workspace(mongo_db, "Forgotten Ltd")
    report, checks = _health(env, tmp_path)
    assert report.exit_code == 1
    assert [c.name for c in report.checks if c.status == "failed"] == ["workspace_addresses"]
    assert "Forgotten Ltd" in checks["workspace_addresses"].reason
    assert checks["workspace_addresses"].details["missing"] == [{"id": str(forgotten), "name": "Forgotten Ltd"}]


def test_missing_indexes_alone_only_warn(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli)
    mongo_db.messages.drop_indexes()
    report, checks = _health(env, tmp_path)
    assert report.exit_code == 0
    assert checks["indexes"].status == "warning"
    assert checks["indexes"].details["commands"] == INDEX_COMMANDS[1:]


ORPHAN_NOTE = "db.messages.createIndex({ timestamp: 1 })"


def test_orphans_need_no_optional_index_any_more(mongo_db, make_env, cli, tmp_path):
    # The run counts messages of vanished chats in its one pass (no {timestamp: 1} index):
    # neither the export summary nor health asks the operator for that index.
    env = _healthy(mongo_db, make_env, cli, real_run=True)
    exported = cli(["export"], env=env)
    assert "orphaned messages not counted" not in exported.stdout
    mongo_db.messages.drop_indexes()
    assert ORPHAN_NOTE not in cli(["health"], env=env).stdout


def test_failed_exports_in_the_last_day(mongo_db, make_env, cli, tmp_path):
    env = _healthy(mongo_db, make_env, cli)
    now = utcnow()

    def log(workspace_id: str, name: str, status: str, minutes_ago: float) -> dict[str, Any]:
        return {
            "workspace_id": workspace_id,
            "workspace_name": name,
            "status": status,
            "created_at": now - timedelta(minutes=minutes_ago),
            "error_message": "SMTP said no" if status == "failed" else None,
        }

    mongo_db.export_logs.insert_many(
        [
            log("64ab00000000000000000011", "Recovered Co", "failed", 60),
            log("64ab00000000000000000011", "Recovered Co", "completed", 45),
            log("64ab00000000000000000012", "Ancient Failure", "failed", 60 * 30),  # older than 24 h
        ]
    )
    report, checks = _health(env, tmp_path)
    assert report.exit_code == 0
    assert checks["failed_exports"].status == "warning"
    assert "Recovered Co" in checks["failed_exports"].reason and "Ancient" not in checks["failed_exports"].reason

    mongo_db.export_logs.insert_one(log("64ab00000000000000000013", "Broken Inc", "failed", 10))
    report, checks = _health(env, tmp_path)
    assert report.exit_code == 1
    check = checks["failed_exports"]
    assert check.status == "failed" and "Broken Inc" in check.reason and "SMTP said no" in check.reason
    assert [e["name"] for e in check.details["still_failing"]] == ["Broken Inc"]
    assert [e["name"] for e in check.details["recovered"]] == ["Recovered Co"]


def test_smtp_problems(mongo_db, make_env, cli, tmp_path, smtp_server):
    env = _healthy(mongo_db, make_env, cli)
    report, checks = _health({**env, "SMTP_PASSWORD": "wrong-password-123"}, tmp_path, smtp_login=True)
    assert report.exit_code == 1
    assert checks["smtp_login"].status == "failed" and "app password" in checks["smtp_login"].reason
    assert "wrong-password-123" not in str(report.as_dict())
    assert smtp_server.messages == []  # a login check sends nothing

    incomplete = {key: value for key, value in env.items() if key != "SMTP_SERVER"}
    report, checks = _health(incomplete, tmp_path, smtp_login=True)
    assert report.exit_code == 1
    assert checks["smtp_settings"].status == "failed" and "SMTP_SERVER" in checks["smtp_settings"].reason
    assert checks["smtp_login"].status == "failed"
