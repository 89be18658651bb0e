"""Only store/logs.py writes export_logs and system_logs, so one module says how every entry looks."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

from bson import ObjectId

from helpers import ORIGINAL_EXPORT_LOG_FIELDS
from wa_export.store import logs
from wa_export.store.connection import SERVICE_NAME, Workspace

SOURCE = Path(__file__).resolve().parent.parent / "src" / "wa_export"
LOGS_MODULE = SOURCE / "store" / "logs.py"
LOG_COLLECTIONS = ("export_logs", "system_logs")
WRITES = frozenset(
    {
        "insert_one",
        "insert_many",
        "update_one",
        "update_many",
        "replace_one",
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "delete_one",
        "delete_many",
        "bulk_write",
    }
)


def log_writes(source: str) -> list[str]:
    """Each write call made on an expression that names a log collection (`store.system_logs.insert_one(...)`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in WRITES:
            target = ast.unparse(node.func.value)
            if any(name in target for name in LOG_COLLECTIONS):
                found.append(f"line {node.lineno}: {target}.{node.func.attr}")
    return found


def test_the_scan_sees_the_ways_a_log_collection_is_written():
    source = (
        "store.system_logs.insert_one({})\n"
        "db['export_logs'].update_many({}, {})\n"
        "ctx.store.export_logs.find_one_and_update(\n    {}, {}\n)\n"
        "store.export_logs.find({})\n"  # a read
        "store.export_state.update_one({}, {})\n"  # another collection
    )
    assert log_writes(source) == [
        "line 1: store.system_logs.insert_one",
        "line 2: db['export_logs'].update_many",
        "line 3: ctx.store.export_logs.find_one_and_update",
    ]


def test_no_module_but_store_logs_writes_export_logs_or_system_logs():
    modules = sorted(SOURCE.rglob("*.py"))
    assert LOGS_MODULE in modules
    offenders = {
        str(path.relative_to(SOURCE)): writes
        for path in modules
        if path != LOGS_MODULE and (writes := log_writes(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}, f"write export_logs/system_logs through wa_export.store.logs: {offenders}"


# The original service's fields (its export_logs and system_logs schema), which its readers rely on.
ORIGINAL_EXPORT_FIELDS = {"_id", *ORIGINAL_EXPORT_LOG_FIELDS}
OUR_EXPORT_FIELDS = {
    "workspace_name",
    "window_start",
    "window_end",
    "trigger",
    "run_id",
    "by_status",
    "anomalies",
    "possible_duplicate",
}
SCHEDULED_ONLY = {"window_start_key", "window_end_key", "part", "parts"}
ORIGINAL_EVENT_FIELDS = {"_id", "event_type", "message", "timestamp", "service"}


def test_export_entries_keep_every_field_and_a_scheduled_one_its_keys(mongo_db):
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    workspace = Workspace("65a1b2c3d4e5f60718293a4b", "Acme", "active", ObjectId("65a1b2c3d4e5f60718293a4b"))
    manual = logs.ExportEntry(
        workspace,
        ["a@acme.test", "b@acme.test"],
        "run-1",
        "manual",
        now,
        3,
        {"received": 3},
        {},
        now,
        now,
        "/exports/acme.xlsx",
    )
    low, high = ObjectId(), ObjectId()
    scheduled = logs.ExportEntry(
        workspace,
        ["a@acme.test"],
        "run-2",
        "scheduled",
        now,
        2,
        {"received": 2},
        {},
        now,
        now,
        "/exports/acme-2.xlsx",
        keys=(low, high),
        part=1,
        parts=2,
    )
    logs.insert_export(mongo_db.export_logs, manual, now, status=logs.STATUS_FAILED, error="refused")
    sending = ObjectId()
    logs.insert_export(
        mongo_db.export_logs, scheduled, now, status=logs.STATUS_SENDING, log_id=sending, possible_duplicate=True
    )
    logs.mark_completed(mongo_db.export_logs, sending, now)

    by_run = {document["run_id"]: document for document in mongo_db.export_logs.find()}
    assert set(by_run["run-1"]) == ORIGINAL_EXPORT_FIELDS | OUR_EXPORT_FIELDS
    assert set(by_run["run-2"]) == ORIGINAL_EXPORT_FIELDS | OUR_EXPORT_FIELDS | SCHEDULED_ONLY
    assert by_run["run-1"]["export_type"] == logs.EXPORT_TYPE == "whatsapp_messages"
    assert by_run["run-1"]["email_sent_to"] == "a@acme.test, b@acme.test"
    assert (by_run["run-1"]["status"], by_run["run-1"]["error_message"]) == ("failed", "refused")
    assert (by_run["run-2"]["status"], by_run["run-2"]["error_message"]) == ("completed", None)
    assert by_run["run-2"]["_id"] == sending and by_run["run-2"]["possible_duplicate"] is True
    assert (by_run["run-2"]["window_start_key"], by_run["run-2"]["window_end_key"]) == (low, high)


def test_every_system_event_has_the_original_envelope_then_its_kind_and_host(mongo_db):
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    logs.record_health_check(mongo_db.system_logs, "health ok", now, logs.HealthCheckDetails(status="ok", checks=[]))
    event = mongo_db.system_logs.find_one()
    assert event is not None
    assert set(event) == ORIGINAL_EVENT_FIELDS | {"kind", "host", "status", "checks"}
    assert (event["event_type"], event["kind"], event["service"]) == ("health_check", "health_check", SERVICE_NAME)
