"""Processes die, disks fill up, runs overlap; nothing is lost.

Everything runs the installed `wa-export export` in a subprocess against an
authenticated MongoDB (password in MONGODB_URI) and an SMTP server with a
distinctive password; every test checks that neither password leaks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from openpyxl import load_workbook
from pymongo.database import Database
from pymongo.errors import AutoReconnect

from faultkit import (
    SMTP_PASSWORD,
    SMTP_USER,
    AuthMongoServer,
    add_now,
    assert_no_secrets,
    delivered,
    first_arrival,
    no_traceback,
)
from helpers import (
    HookedSmtpServer,
    attachments,
    cursor_of,
    lease_skips,
    limit_file_size,
    mailed_rows,
    parse_json,
    runs_overlapped,
    xlsx_files,
)
from seeding import run_cli, seed_workspace, start_cli, utcnow
from wa_export.errors import MongoUnavailable
from wa_export.export import plan
from wa_export.export.run import ExportRequest, ExportRun
from wa_export.settings import load_settings
from wa_export.store import arrivals
from wa_export.store.connection import Store, connect
from wa_export.store.state import Lease
from wa_export.workbook.naming import FOLDER_MARKER


@pytest.fixture
def hooked_smtp() -> Iterator[HookedSmtpServer]:
    with HookedSmtpServer(username=SMTP_USER, password=SMTP_PASSWORD) as server:
        yield server


def _finish(proc: subprocess.Popen[str], timeout: float = 90) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate(timeout=10)
        raise AssertionError(f"wa-export did not finish within {timeout}s\n{stdout}\n{stderr}") from None


def _kill_quietly(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=10)


def _seed_many(db: Database[Any], count: int, per_workspace: int, tag: str) -> tuple[dict[str, str], dict[str, str]]:
    """`count` workspaces; returns (env vars with their addresses, content -> recipient)."""
    env_vars: dict[str, str] = {}
    owner: dict[str, str] = {}
    for number in range(count):
        contents = [f"{tag}{number}-m{index}" for index in range(per_workspace)]
        workspace_id = seed_workspace(db, f"{tag.title()} {number}", contents)
        address = f"ws{number}@{tag}.test"
        env_vars[f"WORKSPACE_{workspace_id}_EMAIL"] = address
        owner.update({content: address for content in contents})
    return env_vars, owner


def _wait_for_lease_expiry(db: Database[Any]) -> None:
    """Sleep until every lease still recorded in export_state has expired."""
    expiries = [
        doc["lease_expires_at"]
        for doc in db.export_state.find({"lease_owner": {"$ne": None}})
        if doc.get("lease_expires_at") is not None
    ]
    if expiries:
        delay = (max(expiries) - datetime.now(UTC)).total_seconds() + 0.3
        if delay > 0:
            time.sleep(delay)


# --- MongoDB dies -------------------------------------------------------------------------


def test_mongodb_killed_mid_run_exits_3_and_next_run_delivers(tmp_path, env, hooked_smtp):
    server = AuthMongoServer(data_path=tmp_path / "db").start()
    proc: subprocess.Popen[str] | None = None
    try:
        client = server.client()
        db = client["wa_export_mongo_killed"]
        env_vars, owner = _seed_many(db, 6, 5, "killed")
        run_env = env(
            hooked_smtp,
            MONGODB_URI=server.auth_uri,
            MONGODB_DATABASE=db.name,
            MONGODB_TIMEOUT_SECONDS="2",
            EXPORT_LEASE_SECONDS="5",
            **env_vars,
        )
        # Two workspaces go through completely; MongoDB dies while the SMTP server holds the third
        # workspace's mail and has not answered yet: that mail is accepted, but neither its completed
        # log nor its cursor can be written.
        hooked_smtp.hook_at = 3
        hooked_smtp.on_message = server.kill
        proc = start_cli(["export"], run_env, tmp_path)
        stdout, stderr = _finish(proc)
        assert proc.returncode == 3, stdout + stderr
        no_traceback(stdout, stderr)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("wa-export: MongoDB is unreachable"), stderr
        assert len(hooked_smtp.messages) == 3

        server.restart()
        db = server.client()[db.name]
        first_mails = len(hooked_smtp.messages)
        # Nothing is recorded completed that was not emailed, with exactly the rows that were mailed.
        completed = list(db.export_logs.find({"status": "completed"}))
        assert len(completed) >= 2, "the workspaces mailed before the kill have their completed logs"
        for log in completed:
            recipients = log["email_sent_to"].split(", ")
            [mail] = [m for m in hooked_smtp.messages[:first_mails] if m.rcpt_tos == recipients]
            rows = mailed_rows(mail)
            assert len(rows) == log["message_count"] == 5
            assert {owner[row[2]] for row in rows} == set(recipients), "the rows of this workspace only"
            assert {row[5] for row in rows} == {log["workspace_id"]}
            [(_, _, payload)] = attachments(mail.message())
            assert Path(log["file_path"]).read_bytes() == payload, "the logged file is the one mailed"
        in_flight = {address for mail in hooked_smtp.messages[:first_mails] for address in mail.rcpt_tos} - {
            log["email_sent_to"] for log in completed
        }
        assert len(in_flight) == 1, "only the mail the server was holding when MongoDB died lacks a log"

        _wait_for_lease_expiry(db)  # the killed run could not release the lease it held
        again = run_cli(["export"], run_env, tmp_path, timeout=90)
        assert again.returncode == 0, again.stdout + again.stderr
        counts = Counter(delivered(hooked_smtp.messages))
        assert set(counts) == set(owner), "every message is delivered after the restart"
        duplicated_to = {owner[content] for content, count in counts.items() if count > 1}
        # The only duplicate the contract allows: the workspace in flight when the database died.
        assert duplicated_to <= in_flight
        assert all(count <= 2 for count in counts.values())
        assert db.export_logs.count_documents({"status": "completed"}) == len(env_vars)
        assert db.export_state.count_documents({"lease_owner": {"$ne": None}}) == 0
        assert_no_secrets(stdout, stderr, again.stdout, again.stderr, db=db, mails=hooked_smtp.messages)
        client.close()
    finally:
        _kill_quietly(proc)
        server.kill()


class _DyingMessages:
    """A cursor that yields some messages and then loses the server, like a killed mongod mid-getMore."""

    def __init__(self, inner: Iterator[dict[str, Any]], after: int) -> None:
        self.inner, self.after = inner, after

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for index, document in enumerate(self.inner):
            if index == self.after:
                raise AutoReconnect("connection closed")
            yield document


def test_mongodb_lost_while_streaming_aborts_the_workbook(tmp_path, fdb, env, smtp, monkeypatch):
    workspace_id = seed_workspace(fdb, "Stream Dies", [f"s-{index}" for index in range(40)])
    settings = load_settings(None, environ=env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@stream.test"}))
    store = Store(connect(settings), settings)
    real = arrivals.window_messages
    monkeypatch.setattr(arrivals, "window_messages", lambda *a, **k: iter(_DyingMessages(real(*a, **k), 25)))
    monkeypatch.setattr(plan, "PASS_DOCUMENT_BYTES", 0)  # the delivery streams its window itself
    try:
        with pytest.raises(MongoUnavailable) as raised:
            ExportRun(settings, store, ExportRequest()).execute()
    finally:
        store.close()
    assert "MongoDB is unreachable" in str(raised.value)
    export_dir = Path(settings.export_dir)
    assert xlsx_files(export_dir) == []
    assert [path for path in export_dir.rglob("*.tmp")] == [] if export_dir.exists() else True
    assert smtp.messages == []
    assert fdb.export_logs.count_documents({"status": "completed"}) == 0
    assert fdb.export_state.count_documents({"lease_owner": {"$ne": None}}) == 0


def test_lease_taken_over_before_sending_sends_nothing(fdb, env, smtp, monkeypatch):
    contents = ["lease-1", "lease-2"]
    workspace_id = seed_workspace(fdb, "Stolen Lease", contents)
    settings = load_settings(None, environ=env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@lease.test"}))
    original_intent = Lease.set_in_flight

    def intent_after_takeover(lease: Lease, *args: Any, **kwargs: Any) -> None:
        # Our lease expired while we worked and another run took the workspace.
        lease.collection.update_one({"_id": lease.workspace_id}, {"$set": {"lease_owner": "another-run"}})
        original_intent(lease, *args, **kwargs)

    store = Store(connect(settings), settings)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(Lease, "set_in_flight", intent_after_takeover)
            result = ExportRun(settings, store, ExportRequest()).execute()
        [outcome] = result.workspaces
        assert outcome.outcome == "failed" and result.exit_code == 1
        assert "taken by another run" in (outcome.reason or "") and "MongoDB error" not in (outcome.reason or "")
        assert smtp.messages == [], "never send a window another run now controls"
        state = fdb.export_state.find_one({"_id": str(workspace_id)})
        assert state["lease_owner"] == "another-run", "a lease that is no longer ours is left alone"
        pinned = state["cursor"]
        assert fdb.export_logs.find_one()["status"] == "failed"

        fdb.export_state.update_one(
            {"_id": str(workspace_id)}, {"$set": {"lease_owner": None, "lease_expires_at": None}}
        )
        retried = ExportRun(settings, store, ExportRequest()).execute()
    finally:
        store.close()
    assert retried.exit_code == 0 and [r.outcome for r in retried.workspaces] == ["completed"]
    assert sorted(delivered(smtp.messages)) == contents
    assert cursor_of(fdb, workspace_id) > pinned
    assert_no_secrets(*(r.reason for r in result.workspaces), db=fdb, mails=smtp.messages)


# --- the wa-export process dies -------------------------------------------------------------


def _set_lease_expiry(db: Database[Any], workspace_id: ObjectId, expires_at: datetime) -> None:
    assert (
        db.export_state.update_one({"_id": str(workspace_id)}, {"$set": {"lease_expires_at": expires_at}}).matched_count
        == 1
    )


def test_sigkill_while_writing_leaves_no_broken_xlsx_and_the_lease_holds_until_expiry(tmp_path, fdb, env, run, smtp):
    # ~18 MB of message text: writing the workbook takes the child most of a second of CPU even on an idle
    # machine (the .tmp exists ~0.75 s), far longer than our 2 ms polling. Reniced to 10, the child yields
    # the CPU to us on a loaded machine, so load stretches its writing rather than our reaction to the
    # .tmp. (Not 19: under CPU-bound load that starves the child for a minute.)
    contents = [f"big-{index}" for index in range(600)]
    workspace_id = seed_workspace(fdb, "Big Workbook", contents, content_size=30_000)
    run_env = env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@big.test"})
    export_dir = Path(run_env["EXPORT_DIR"])
    proc = start_cli(["export"], run_env, tmp_path)
    try:
        os.setpriority(os.PRIO_PROCESS, proc.pid, 10)
        deadline = time.monotonic() + 60
        while not (export_dir.exists() and any(export_dir.rglob(".*.tmp"))):
            assert proc.poll() is None, "test setup: wa-export finished before a temporary workbook was seen"
            assert time.monotonic() < deadline, "no temporary workbook appeared"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    finally:
        _kill_quietly(proc)
    assert proc.returncode == -signal.SIGKILL
    leftovers = [
        path
        for path in export_dir.rglob("*")
        if path.is_file() and path.suffix != ".xlsx" and path.name != FOLDER_MARKER
    ]
    # If this fails the kill came too late (the workbook was already complete): a setup failure, not a pass.
    assert xlsx_files(export_dir) == [] and smtp.messages == [] and leftovers, (
        "test setup: the run was not killed while writing its workbook"
    )
    assert all(path.name.startswith(".") and path.name.endswith(".tmp") for path in leftovers), leftovers
    state = fdb.export_state.find_one({"_id": str(workspace_id)})
    assert state is not None and state["lease_owner"] is not None, "the killed run still holds its lease"
    killed_owner, pinned = state["lease_owner"], state["cursor"]

    # While the lease is unexpired, another run leaves the workspace alone. (Set far ahead rather than
    # racing the real expiry; test_leases.py shows a lease expiring by the clock.)
    _set_lease_expiry(fdb, workspace_id, datetime.now(UTC) + timedelta(days=1))
    blocked = run(run_env, "--json")
    assert blocked.returncode == 0, blocked.stdout + blocked.stderr
    [skipped] = parse_json(blocked)["workspaces"]
    assert skipped["outcome"] == "skipped" and lease_skips([parse_json(blocked)]) == [skipped]
    assert smtp.messages == [] and xlsx_files(export_dir) == []
    state = fdb.export_state.find_one({"_id": str(workspace_id)})
    assert state["lease_owner"] == killed_owner and state["cursor"] == pinned

    # The lease expires (simulated): the next run takes over and delivers the whole window.
    _set_lease_expiry(fdb, workspace_id, datetime.now(UTC) - timedelta(seconds=1))
    recovered = run(run_env)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert [sorted(delivered(smtp.messages))] == [sorted(contents)]
    for path in xlsx_files(export_dir):
        load_workbook(path, read_only=True).close()
    assert cursor_of(fdb, workspace_id) > pinned
    assert fdb.export_state.find_one({"_id": str(workspace_id)})["lease_owner"] is None
    assert_no_secrets(blocked.stdout, blocked.stderr, recovered.stdout, recovered.stderr, db=fdb, mails=smtp.messages)


def test_sigterm_finishes_current_workspace_releases_leases_and_stops(tmp_path, fdb, env, run, hooked_smtp):
    env_vars, owner = _seed_many(fdb, 8, 4, "term")
    run_env = env(hooked_smtp, **env_vars)
    started: list[subprocess.Popen[str]] = []
    # SIGTERM arrives while the first workspace's mail is being accepted.
    hooked_smtp.on_message = lambda: started[0].send_signal(signal.SIGTERM)
    proc = start_cli(["export"], run_env, tmp_path)
    started.append(proc)
    try:
        stdout, stderr = _finish(proc)
    finally:
        _kill_quietly(proc)
    assert proc.returncode == 1, stdout + stderr
    no_traceback(stdout, stderr)
    assert "interrupted" in stdout
    assert len(hooked_smtp.messages) == 1, "the run stops after the workspace it was exporting"
    assert fdb.export_logs.count_documents({"status": "completed"}) == 1
    assert fdb.export_state.count_documents({"lease_owner": {"$ne": None}}) == 0, "every lease is released"
    event = fdb.system_logs.find_one({"kind": "export_run"})
    assert event is not None and event["interrupted"] is True

    rest = run(run_env)  # no lease to wait for: the rest is delivered at once
    assert rest.returncode == 0, rest.stdout + rest.stderr
    counts = Counter(delivered(hooked_smtp.messages))
    assert set(counts) == set(owner) and set(counts.values()) == {1}
    assert len(hooked_smtp.messages) == len(env_vars)
    assert_no_secrets(stdout, stderr, rest.stdout, rest.stderr, db=fdb, mails=hooked_smtp.messages)


# --- the export directory cannot take the file ----------------------------------------------


@pytest.mark.parametrize("fault", ["export_dir_below_a_file", "file_size_limit"])
def test_unwritable_export_dir_fails_cleanly_and_keeps_the_window(fault, tmp_path, fdb, env, run, smtp):
    # Incompressible text: the compressed workbook (~80 KB) is over the 64 KB file-size limit below.
    names = [f"disk-{index}" for index in range(120)]
    contents = [f"{name} {os.urandom(400).hex()}" for name in names]
    workspace_id = seed_workspace(fdb, "Disk Trouble", contents)
    address = {f"WORKSPACE_{workspace_id}_EMAIL": "ops@disk.test"}
    good_dir = tmp_path / "exports"
    if fault == "export_dir_below_a_file":
        blocker = tmp_path / "not-a-directory"
        blocker.write_text("a regular file where EXPORT_DIR's parent should be")
        fault_env = env(EXPORT_DIR=str(blocker / "exports"), **address)
        failed = run(fault_env)
    else:
        fault_env = env(**address)
        proc = start_cli(["export"], fault_env, tmp_path, preexec_fn=limit_file_size(64 * 1024))
        try:
            stdout, stderr = _finish(proc)
        finally:
            _kill_quietly(proc)
        failed = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    no_traceback(failed.stdout, failed.stderr)
    [log] = list(fdb.export_logs.find())
    assert log["status"] == "failed" and log["file_path"] is None
    reason = log["error_message"]
    assert "EXPORT_DIR" in reason, reason
    if fault == "file_size_limit":
        assert "file-size limit" in reason and "no partial file" in reason, reason
    else:
        assert "not a directory" in reason.lower() and "regular file is in the way" in reason, reason
    assert reason in failed.stdout
    assert smtp.messages == []
    export_dir = Path(fault_env["EXPORT_DIR"])
    if export_dir.exists():
        assert xlsx_files(export_dir) == []
        assert [p for p in export_dir.rglob("*") if p.is_file() and p.name != FOLDER_MARKER] == []
    pinned = cursor_of(fdb, workspace_id)
    assert pinned is not None and pinned <= first_arrival(fdb)
    outputs = [failed.stdout, failed.stderr]

    add_now(fdb, workspace_id, ["later-1"])
    recovered = run(env(EXPORT_DIR=str(good_dir), **address))
    outputs += [recovered.stdout, recovered.stderr]
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert sorted(delivered(smtp.messages)) == sorted([*names, "later-1"])
    assert len(smtp.messages) == 1
    assert cursor_of(fdb, workspace_id) > pinned
    assert_no_secrets(*outputs, db=fdb, mails=smtp.messages)


# --- four runs at once while messages keep arriving ------------------------------------------


@pytest.mark.gated_smtp(4, username=SMTP_USER, password=SMTP_PASSWORD)
def test_four_concurrent_runs_with_arriving_messages_email_everything_once(tmp_path, fdb, env, run, gated_smtp):
    env_vars, owner = _seed_many(fdb, 10, 3, "conc")
    chats = {doc["workspace_id"]: doc["_id"] for doc in fdb.chats.find()}
    by_workspace = {ObjectId(key.split("_")[1]): value for key, value in env_vars.items()}
    lag = 2
    # Each run's first mail is held until all four runs have connected: they provably overlap, and each
    # holds a workspace's lease while the later ones pass over it.
    smtp = gated_smtp
    run_env = env(smtp, EXPORT_LAG_SECONDS=str(lag), SMTP_TIMEOUT_SECONDS="30", **env_vars)
    stop = threading.Event()
    inserted: list[str] = []
    errors: list[BaseException] = []

    def keep_inserting() -> None:
        workspaces = list(by_workspace)
        number = 0
        try:
            while not stop.is_set():
                workspace_id = workspaces[number % len(workspaces)]
                content = f"live{number}"
                # Timestamped "now", as the platform writes them; the lag covers the insert latency.
                fdb.messages.insert_one(
                    {
                        "_id": ObjectId(),
                        "chat_id": chats[workspace_id],
                        "direction": "incoming",
                        "is_ai_generated": False,
                        "content": content,
                        "timestamp": utcnow(),
                    }
                )
                inserted.append(content)
                owner[content] = by_workspace[workspace_id]
                number += 1
                time.sleep(0.04)
        except BaseException as error:
            errors.append(error)

    inserter = threading.Thread(target=keep_inserting, daemon=True)
    processes: list[subprocess.Popen[str]] = []
    outputs: list[str] = []
    documents: list[dict[str, Any]] = []
    inserter.start()
    try:
        time.sleep(0.3)
        for _ in range(4):  # staggered, so later runs see windows that earlier ones could not
            processes.append(start_cli(["export", "--json"], run_env, tmp_path))
            time.sleep(0.5)
        for proc in processes:
            stdout, stderr = _finish(proc)
            outputs += [stdout, stderr]
            assert proc.returncode == 0, stdout + stderr
            no_traceback(stdout, stderr)
            documents.append(parse_json(subprocess.CompletedProcess(proc.args, 0, stdout, stderr)))
        time.sleep(0.3)
    finally:
        stop.set()
        inserter.join(10)
        for proc in processes:
            _kill_quietly(proc)
    assert not errors, errors
    assert len(inserted) > 20
    assert not smtp.gate_timed_out, "the four runs never had their SMTP connections open at the same time"
    assert runs_overlapped(documents)
    assert all(any(ws["outcome"] == "completed" for ws in document["workspaces"]) for document in documents), (
        "every run exported something"
    )
    assert lease_skips(documents), "runs met each other's leases"

    time.sleep(lag + 1.3)  # the last inserted messages are now older than the lag (window ends are whole seconds)
    final = run(run_env)
    outputs += [final.stdout, final.stderr]
    assert final.returncode == 0, final.stdout + final.stderr

    counts = Counter(delivered(smtp.messages))
    missing = set(owner) - set(counts)
    assert not missing, f"{len(missing)} messages never emailed"
    assert {content for content, count in counts.items() if count > 1} == set()
    assert len(counts) == fdb.messages.count_documents({})
    for mail in smtp.messages:  # and each went to its own workspace
        assert {owner[text] for text in delivered([mail])} == set(mail.rcpt_tos)
    assert fdb.export_state.count_documents({"lease_owner": {"$ne": None}}) == 0
    assert_no_secrets(*outputs, db=fdb, mails=smtp.messages)
