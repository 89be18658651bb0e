"""The metrics file: a Prometheus textfile-collector file after every export run.

Every file is read back with prometheus_client's own parser, as node_exporter
would read it.
"""

from __future__ import annotations

import os
import stat
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient

from helpers import CommandLog, limit_file_size, parse_json
from seeding import add_chat, add_messages, add_workspace, message_doc, object_id_at, run_cli, utcnow
from servers import free_port
from wa_export import metrics as metrics_module
from wa_export.metrics import RunMetrics, WorkspaceMetrics, write_metrics_file
from wa_export.settings import load_settings
from wa_export.store.connection import Store

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(path: Path) -> Samples:
    found: Samples = {}
    for family in text_string_to_metric_families(path.read_text(encoding="utf-8")):
        assert family.type == "gauge", family
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _run(name: str, trigger: str = "scheduled") -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("trigger", trigger),))


def _workspace(name: str, workspace_id: Any) -> tuple[str, tuple[tuple[str, str], ...]]:
    return (name, (("workspace_id", str(workspace_id)),))


def test_scheduled_run_writes_run_and_workspace_facts(mongo_db, make_env, tmp_path, smtp_server):
    now = utcnow()
    delivered = add_workspace(mongo_db, "Delivered Co")
    add_messages(
        mongo_db,
        add_chat(mongo_db, delivered),
        [{"content": f"m{i}", "timestamp": now - timedelta(minutes=2)} for i in range(3)],
    )
    idle = add_workspace(mongo_db, "Idle Co")
    failing = add_workspace(mongo_db, "Failing Co")  # no address: it cannot be delivered
    failing_chat = add_chat(mongo_db, failing)
    cursor_time = (now - timedelta(hours=2)).replace(microsecond=0)
    oldest = (now - timedelta(minutes=100)).replace(microsecond=0)
    mongo_db.messages.insert_many(
        [
            message_doc(failing_chat, content="waiting", _id=object_id_at(moment), timestamp=moment)
            for moment in (
                cursor_time - timedelta(minutes=1),
                oldest,
                now - timedelta(minutes=50),
                now - timedelta(minutes=40),
            )
        ]
    )
    in_flight = add_workspace(mongo_db, "In Flight Co")
    in_flight_chat = add_chat(mongo_db, in_flight)
    mongo_db.messages.insert_one(
        message_doc(
            in_flight_chat,
            content="maybe sent",
            _id=object_id_at(now - timedelta(minutes=30)),
            timestamp=now - timedelta(minutes=30),
        )
    )
    mongo_db.export_state.insert_many(
        [
            {
                "_id": str(failing),
                "cursor": ObjectId.from_datetime(cursor_time),
                "cursor_source": "export",
                "consecutive_failures": 2,
                "last_success_at": now - timedelta(hours=2),
            },
            {
                "_id": str(in_flight),
                "cursor": ObjectId.from_datetime(now - timedelta(hours=1)),
                "cursor_source": "export",
                "consecutive_failures": 0,
                "in_flight": {"run_id": "dead", "part": 1, "parts": 1},
            },
        ]
    )
    path = tmp_path / "textfile" / "wa_export.prom"
    path.parent.mkdir()
    env = make_env(
        EXPORT_METRICS_FILE=str(path),
        **{f"WORKSPACE_{delivered}_EMAIL": "d@delivered.test", f"WORKSPACE_{idle}_EMAIL": "i@idle.test"},
    )

    result = run_cli(["export"], env, tmp_path, preexec_fn=lambda: os.umask(0o077))  # as systemd runs it (UMask=0077)
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # node_exporter, another user, must read it
    samples = _samples(path)
    assert abs(samples[_run("wa_export_last_run_timestamp_seconds")] - datetime.now(UTC).timestamp()) < 120
    assert 0 < samples[_run("wa_export_last_run_duration_seconds")] < 120
    assert samples[_run("wa_export_last_run_exit_code")] == 0
    assert samples[_run("wa_export_last_run_messages_exported")] == 3
    assert samples[("wa_export_last_run_workspaces", (("outcome", "completed"), ("trigger", "scheduled")))] == 1

    assert samples[_workspace("wa_export_workspace_waiting_messages", delivered)] == 0
    assert samples[_workspace("wa_export_workspace_oldest_waiting_age_seconds", delivered)] == 0
    last_success = samples[_workspace("wa_export_workspace_last_success_timestamp_seconds", delivered)]
    assert abs(last_success - now.timestamp()) < 120
    assert samples[_workspace("wa_export_workspace_waiting_messages", idle)] == 0
    # The failing workspace is counted from its cursor: 3 arrived after it, 1 before.
    assert samples[_workspace("wa_export_workspace_waiting_messages", failing)] == 3
    age = samples[_workspace("wa_export_workspace_oldest_waiting_age_seconds", failing)]
    assert 100 * 60 - 1 <= age <= 100 * 60 + 120, age
    assert samples[_workspace("wa_export_workspace_consecutive_failures", failing)] == 2
    assert (
        samples[_workspace("wa_export_workspace_last_success_timestamp_seconds", failing)]
        == (now - timedelta(hours=2)).timestamp()
    )
    assert samples[_workspace("wa_export_workspace_waiting_messages", in_flight)] == 1
    for workspace in (delivered, idle, failing, in_flight):
        assert _workspace("wa_export_workspace_consecutive_failures", workspace) in samples
    text = path.read_text()
    assert "+4915112345678" not in text and "m0" not in text  # ids and counts only


def test_option_wins_over_the_setting_and_dry_runs_write_nothing(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Quiet Co")
    setting = tmp_path / "setting.prom"
    option = tmp_path / "option.prom"
    env = make_env(EXPORT_METRICS_FILE=str(setting))

    dry = cli(["export", "--dry-run"], env=env)
    assert dry.returncode == 0 and not setting.exists()
    chosen = cli(["export", "--metrics-file", str(option)], env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert option.exists() and not setting.exists()
    assert _samples(option)[_run("wa_export_last_run_exit_code")] == 0
    plain = cli(["export"], env=env)
    assert plain.returncode == 0 and setting.exists()


def test_unusable_metrics_paths_are_refused_before_the_run(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Strict Co")
    not_prom = cli(["export", "--metrics-file", str(tmp_path / "metrics.txt")])
    assert not_prom.returncode == 2 and "must end in .prom" in not_prom.stderr
    folder = cli(["export"], env=make_env(EXPORT_METRICS_FILE=str(tmp_path)))
    assert folder.returncode == 2 and "EXPORT_METRICS_FILE" in folder.stderr and "is a directory" in folder.stderr
    assert mongo_db.system_logs.count_documents({}) == 0  # no run happened


def test_a_manual_run_keeps_the_scheduled_runs_facts(mongo_db, make_env, cli, tmp_path):
    workspace = add_workspace(mongo_db, "Broken Mail Co")
    add_messages(mongo_db, add_chat(mongo_db, workspace), [{"timestamp": utcnow() - timedelta(minutes=2)}])
    path = tmp_path / "wa_export.prom"
    env = make_env(
        EXPORT_METRICS_FILE=str(path),
        SMTP_PORT=str(free_port()),
        SMTP_TIMEOUT_SECONDS="3",
        **{f"WORKSPACE_{workspace}_EMAIL": "ops@broken.test"},
    )

    scheduled = cli(["export"], env=env)
    assert scheduled.returncode == 1, scheduled.stdout  # the SMTP server is not there
    manual = cli(["export", "--hours", "1", "--no-email"], env=env)
    assert manual.returncode == 0, manual.stderr
    samples = _samples(path)
    assert samples[_run("wa_export_last_run_exit_code", "scheduled")] == 1  # still visible to an alert
    assert samples[_run("wa_export_last_run_exit_code", "manual")] == 0
    assert samples[_run("wa_export_last_run_messages_exported", "manual")] == 1
    assert samples[_run("wa_export_last_run_messages_exported", "scheduled")] == 0
    assert samples[("wa_export_last_run_workspaces", (("outcome", "failed"), ("trigger", "scheduled")))] == 1


def test_mongodb_unreachable_still_writes_the_run_facts(make_env, cli, tmp_path):
    path = tmp_path / "wa_export.prom"
    env = make_env(
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        MONGODB_TIMEOUT_SECONDS="0.5",
        EXPORT_METRICS_FILE=str(path),
    )
    result = cli(["export"], env=env)
    assert result.returncode == 3, result.stderr
    samples = _samples(path)
    assert samples[_run("wa_export_last_run_exit_code")] == 3
    assert abs(samples[_run("wa_export_last_run_timestamp_seconds")] - datetime.now(UTC).timestamp()) < 120
    assert _run("wa_export_last_run_duration_seconds") in samples
    assert not any(name.startswith("wa_export_workspace_") for name, _ in samples)


def test_bad_settings_with_the_option_still_write_exit_code_2(make_env, cli, tmp_path):
    path = tmp_path / "wa_export.prom"
    result = cli(["export", "--metrics-file", str(path)], env=make_env(EXPORT_TIMEZONE="Mars/Olympus"))
    assert result.returncode == 2 and "EXPORT_TIMEZONE" in result.stderr
    assert _samples(path)[_run("wa_export_last_run_exit_code")] == 2


def test_an_unwritable_metrics_file_is_one_warning_and_keeps_the_exit_code(mongo_db, make_env, cli, tmp_path):
    add_workspace(mongo_db, "Warned Co")
    missing = tmp_path / "no-such-folder" / "wa_export.prom"
    result = cli(["export", "--json", "--metrics-file", str(missing)])
    assert result.returncode == 0, result.stderr
    assert parse_json(result)["ok"] is True  # stdout stays one JSON document
    warnings = [line for line in result.stderr.splitlines() if "WARNING" in line]
    assert len(warnings) == 1 and str(missing) in warnings[0] and "exit code is unchanged" in warnings[0]


def test_a_write_that_fails_midway_leaves_the_old_file_intact(mongo_db, make_env, tmp_path):
    for number in range(30):
        add_workspace(mongo_db, f"Many Co {number}")  # a file far bigger than the size limit below
    folder = tmp_path / "textfile"
    folder.mkdir()
    path = folder / "wa_export.prom"
    old = b'# TYPE wa_export_last_run_exit_code gauge\nwa_export_last_run_exit_code{trigger="scheduled"} 0.0\n'
    path.write_bytes(old)
    # The kernel stops every write past 1,000 bytes (EFBIG): a disk filling up.
    result = run_cli(["export", "--metrics-file", str(path)], make_env(), tmp_path, preexec_fn=limit_file_size(1000))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING: could not write the metrics file" in result.stderr
    assert path.read_bytes() == old
    assert sorted(entry.name for entry in folder.iterdir()) == ["wa_export.prom"]  # no temp file left behind


def test_the_file_is_replaced_by_renaming_a_complete_temp_file_in_the_same_folder(tmp_path, monkeypatch):
    path = tmp_path / "wa_export.prom"
    path.write_text("# old\n")
    renames: list[tuple[Path, Path, str, int]] = []
    real_replace = os.replace

    def observed_replace(source: Any, target: Any) -> None:
        source_path = Path(source)
        renames.append((source_path, Path(target), source_path.read_text(), stat.S_IMODE(source_path.stat().st_mode)))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", observed_replace)
    facts = RunMetrics(
        trigger="scheduled",
        finished_at=datetime.now(UTC),
        duration_seconds=1.5,
        exit_code=0,
        messages_exported=7,
        workspaces=(WorkspaceMetrics("a" * 24, waiting_messages=2, oldest_waiting_age_seconds=60.0),),
    )
    write_metrics_file(path, facts)

    [(source, target, content, mode)] = renames
    assert target == path and source.parent == path.parent
    assert source.name.startswith(".") and not source.name.endswith(".prom")  # node_exporter never reads it
    assert content == path.read_text() and mode == 0o644
    assert "wa_export_workspace_waiting_messages" in content
    assert not source.exists()


def test_workers_parent_writes_the_merged_file_and_children_write_none(mongo_db, make_env, cli_process, tmp_path):
    now = utcnow()
    env_vars: dict[str, str] = {}
    for number in range(2):
        workspace = add_workspace(mongo_db, f"Worker Co {number}")
        add_messages(mongo_db, add_chat(mongo_db, workspace), [{"timestamp": now - timedelta(minutes=2)}] * 2)
        env_vars[f"WORKSPACE_{workspace}_EMAIL"] = f"w{number}@workers.test"
    from_setting = tmp_path / "children-would-write-here.prom"
    parent = tmp_path / "parent.prom"
    env = make_env(EXPORT_METRICS_FILE=str(from_setting), **env_vars)

    result = cli_process(["export", "--workers", "2", "--metrics-file", str(parent)], env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not from_setting.exists()  # the children were given no metrics file, and read none from the setting
    samples = _samples(parent)
    assert samples[("wa_export_last_run_workspaces", (("outcome", "completed"), ("trigger", "scheduled")))] == 2
    assert samples[_run("wa_export_last_run_messages_exported")] == 4
    assert sum(1 for name, _ in samples if name == "wa_export_workspace_waiting_messages") == 2


@contextmanager
def _observed(settings: Any):
    listener = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[listener])
    try:
        yield Store(client, settings), listener
    finally:
        client.close()


@pytest.mark.parametrize("failing", [0, 2])
def test_idle_workspaces_cost_no_query_of_their_own(mongo_db, make_env, tmp_path, monkeypatch, failing):
    # Per-workspace facts are two reads for every workspace together; only a
    # workspace with a failure costs its own queries (its chats, count, oldest).
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env())
    counts = []
    for idle in (5, 50):
        mongo_db.client.drop_database(mongo_db.name)
        outcomes: dict[str, str] = {}
        for number in range(idle):
            outcomes[str(add_workspace(mongo_db, f"Idle {number}"))] = "no_messages"
        for number in range(failing):
            workspace = add_workspace(mongo_db, f"Failing {number}")
            add_messages(mongo_db, add_chat(mongo_db, workspace), [{"timestamp": utcnow()}])
            mongo_db.export_state.insert_one(
                {
                    "_id": str(workspace),
                    "cursor": ObjectId.from_datetime(utcnow() - timedelta(hours=1)),
                    "consecutive_failures": 1,
                }
            )
            outcomes[str(workspace)] = "failed"
        facts = metrics_module.RunMetrics("scheduled", 1 if failing else 0, 1.0, outcomes, 0, moves_cursors=True)
        with _observed(settings) as (store, listener):
            collected = metrics_module.collect_metrics(settings, facts, store)
        assert len(collected.workspaces) == idle + failing
        assert all(
            item.waiting_messages == 0 for item in collected.workspaces if outcomes[item.workspace_id] == "no_messages"
        )
        assert all(
            item.waiting_messages == 1 for item in collected.workspaces if outcomes[item.workspace_id] == "failed"
        )
        counts.append(len(listener.names))
    assert counts[0] == counts[1], counts  # 45 more idle workspaces, not one more command
    # find workspaces, find export_state, hello (the database clock), endSessions; + chats, count, oldest each
    assert counts[0] <= 4 + 3 * failing, (counts, listener.names)


def test_text_round_trips_through_the_reference_parser():
    # Every escape the text format defines must survive, and the other
    # trigger's run facts must be carried over from the previous text exactly.
    awkward = 'quote " backslash \\ newline \n end'
    manual = RunMetrics(
        trigger="manual",
        finished_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        duration_seconds=0.25,
        exit_code=1,
        messages_exported=9,
        outcomes={"a" * 24: "failed", "c" * 24: awkward, "d" * 24: awkward},
        workspaces=(
            WorkspaceMetrics(
                "b" * 24,
                last_success_at=datetime(2026, 1, 1, tzinfo=UTC),
                consecutive_failures=4,
                waiting_messages=12,
                oldest_waiting_age_seconds=3600.5,
            ),
        ),
    )
    scheduled = RunMetrics(trigger="scheduled", finished_at=datetime.now(UTC), duration_seconds=3.0, exit_code=0)
    text = metrics_module.render_metrics(scheduled, metrics_module.render_metrics(manual).decode()).decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples[_run("wa_export_last_run_exit_code", "manual")] == 1
    assert samples[_run("wa_export_last_run_exit_code", "scheduled")] == 0
    assert (
        samples[_run("wa_export_last_run_timestamp_seconds", "manual")]
        == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC).timestamp()
    )
    assert samples[("wa_export_last_run_workspaces", (("outcome", awkward), ("trigger", "manual")))] == 2
    # per-workspace series are this run's only: the scheduled run above had none
    assert not any(name.startswith("wa_export_workspace_") for name, _ in samples)
    alone = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(metrics_module.render_metrics(manual).decode())
        for s in f.samples
    }
    assert alone[_workspace("wa_export_workspace_oldest_waiting_age_seconds", "b" * 24)] == 3600.5
    assert alone[_workspace("wa_export_workspace_consecutive_failures", "b" * 24)] == 4
