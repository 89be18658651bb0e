"""Scale of a scheduled run: cost follows the new messages, not the workspaces or their chats.

    .venv/bin/python bench/scale.py                 # 1,000 workspaces, 50 with new messages; writes bench/RESULTS.md
    .venv/bin/python bench/scale.py --no-results    # print only
    .venv/bin/python bench/scale.py --workspaces 300 --exporting 10 --skip-rows   # a quick look

Starts its own servers on 127.0.0.1: mongoeco (LocalMongoServer, a subprocess)
and aiosmtpd with STARTTLS + AUTH (a subprocess, so it never competes for the
measured process's GIL). Seeds once: N active workspaces with two chats each,
one of them with 5,000 chats, in batches of 250. Then, for each algorithm:

* **before**: the scheduled run as it was before arrival-order delivery (git
  ref `--before-ref`, default the commit this branch started from), its
  package unpacked with `git archive` and put first on PYTHONPATH;
* **after**: the current tree.

each in a fresh subprocess, exactly one scheduled run, measured with a pymongo
CommandListener (commands and the documents their replies carry) and
`time.process_time()` (our CPU; per exporting workspace, the CPU spent inside
that workspace's export, which includes its workbook and its email):

1. a warm-up run with no message anywhere (every workspace gets its state;
   for "after" this is also the idle run: its cost is the run's fixed part);
2. new messages (a handful) for the exporting workspaces, three of them in
   three of the big tenant's chats;
3. the measured run;
4. steps 1-3 again without the command listener (whose events cost our process
   ~0.25 ms per command, production has none), `--cpu-runs` times (default 3):
   our CPU comes from the pass with the median CPU per exporting workspace
   ("before" skips it unless `--before-quiet`: its runs take minutes). It also
   reports where each exporting workspace's CPU goes, and the CPU of one `ping`
   round trip in the same process, because this shared machine's speed varies
   (`BENCH_PROFILE=file.prof` adds a cProfile of those deliveries).

The projection for a real MongoDB: measured commands x the stated round trip
plus our measured CPU, scaled to `--project` workspaces with the same share
exporting; the server's own query time and SMTP are not in it.

Last, a 100,000-row single-workspace export as a scheduled run writes it
(`bench/run.py --child scheduled`: rows.py -> the template writer, or the
openpyxl writer in a tree without one), before and after, alternating: wall
and CPU seconds, and, with valgrind installed, the instructions per row from
callgrind (a 30,000-row export minus a 10,000-row one), the one figure this
shared machine's load does not move.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo import MongoClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from many_workspaces import SmtpProcess, base_env
from run import RESULTS, machine_info, write_section
from wa_export.demo.servers import LocalMongoServer
from wa_export.store.arrivals import object_id_at

DATABASE = "wa_export_scale"
BEFORE_REF = "ada7f70"  # main before arrival-order delivery
RTT_MS = 0.5
BATCH = 250  # mongoeco cancels big inserts into a growing collection

# One scheduled run in a fresh process, measured: printed as one JSON line.
DRIVER = r"""
import cProfile, json, os, sys, time
from pymongo import MongoClient, monitoring

profile_path = os.environ.get("BENCH_PROFILE")
profiler = cProfile.Profile(time.thread_time) if profile_path else None

class Listener(monitoring.CommandListener):
    def __init__(self):
        self.commands = {}
        self.documents = 0
        self.round_trips_us = 0
    def started(self, event):
        self.commands[event.command_name] = self.commands.get(event.command_name, 0) + 1
    def succeeded(self, event):
        self.round_trips_us += event.duration_micros
        cursor = event.reply.get("cursor") if isinstance(event.reply, dict) else None
        if isinstance(cursor, dict):
            self.documents += len(cursor.get("firstBatch", cursor.get("nextBatch", [])))
    def failed(self, event):
        self.round_trips_us += event.duration_micros

from wa_export.settings import load_settings
from wa_export.store.connection import Store
import wa_export.export.run as run_module

per_workspace = []
if hasattr(run_module, "deliver"):  # after: one workspace's scheduled delivery
    inner = run_module.deliver
    thread_cpu = []  # the calling thread's own CPU, without the helper threads (lease keeper)
    def timed(ctx, item):
        started, thread_started = time.process_time(), time.thread_time()
        if profiler is not None:
            profiler.enable()
        result = inner(ctx, item)
        if profiler is not None:
            profiler.disable()
        per_workspace.append((result.outcome, time.process_time() - started))
        if result.outcome == "completed":
            thread_cpu.append(time.thread_time() - thread_started)
        return result
    run_module.deliver = timed
else:  # before: ExportRun.export_workspace did every workspace, idle or not
    inner = run_module.ExportRun.export_workspace
    def timed(self, workspace):
        started = time.process_time()
        result = inner(self, workspace)
        per_workspace.append((result.outcome, time.process_time() - started))
        return result
    run_module.ExportRun.export_workspace = timed

# Our CPU inside the steps of a delivery (process_time, nested steps counted in both).
breakdown = {}
def account(owner, name, label):
    # A breakdown only: a step that a later tree renamed or merged is left out, not an error.
    original = getattr(owner, name, None)
    if original is None:
        print(f"bench: no {getattr(owner, '__name__', owner)}.{name} in this tree; {label!r} not broken down", file=sys.stderr)
        return
    def wrapper(*args, **kwargs):
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            breakdown[label] = breakdown.get(label, 0.0) + time.thread_time() - started
    setattr(owner, name, wrapper)
quiet = os.environ.get("BENCH_QUIET") == "1"  # production-like: no command listener
if hasattr(run_module, "deliver"):
    import pymongo.collection, wa_export.export.delivery as delivery, wa_export.export.delivery as window
    import wa_export.mail.transport as transport
    account(window, "write_workbook", "workbook")
    account(transport, "build_message", "email: build MIME")
    account(transport.MailSender, "send", "email: build + send")
    account(transport.MailSender, "_attempt_send", "email: SMTP transaction")
    account(transport.MailSender, "alive", "email: reused connection check")
    account(transport.MailSender, "login", "email: connect + login (once per run)")
    import wa_export.workbook.writer as writer
    account(writer.WorkbookWriter, "append_many", "workbook: rows (incl. reading the messages)")
    account(writer.WorkbookWriter, "commit", "workbook: package + publish")
    account(writer.WorkbookWriter, "__init__", "workbook: new writer")
    account(window, "workspace_folder", "workbook: workspace folder")
    account(window, "publish_path_candidates", "workbook: file name")
    import pymongo.cursor
    account(pymongo.cursor.Cursor, "next", "pymongo: cursor next (find, getMore, decoding)")
    account(delivery, "acquire_lease", "lease: acquire")
    for method in ("open_window", "write_parts", "_send_all", "log"):
        account(delivery.WorkspaceExport, method, f"delivery: {method}")
    account(delivery, "compose_export_mail", "email: text")
    import wa_export.export.results as context
    account(context.MailSession, "send", "email: session send")
    account(delivery, "renewal_interval", "lease: keeper start")
    for method in ("update_one", "insert_one", "find_one_and_update", "find"):
        account(pymongo.collection.Collection, method, f"pymongo {method}")

settings = load_settings()
listener = Listener()
client = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[] if quiet else [listener])
store = Store(client, settings)
cpu, wall = time.process_time(), time.perf_counter()
result = run_module.ExportRun(settings, store, run_module.ExportRequest()).execute()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
commands, documents = sum(listener.commands.values()), listener.documents  # the run's, not the pings below
# This machine's speed at this moment (it is shared: the same command's CPU varies ~3x within
# an hour): the CPU of one `ping` round trip, pymongo's cheapest command, in this process.
for _ in range(20):
    client.admin.command("ping")
ping_started = time.thread_time()
for _ in range(200):
    client.admin.command("ping")
ping_cpu = (time.thread_time() - ping_started) / 200
client.close()
if profiler is not None:
    profiler.dump_stats(profile_path)
exporting = [seconds for outcome, seconds in per_workspace if outcome == "completed"]
print(json.dumps({
    "wall": wall, "cpu": cpu, "commands": commands, "by_command": listener.commands,
    "documents": documents, "round_trips": listener.round_trips_us / 1e6,
    "workspaces": len(result.workspaces), "completed": result.count("completed"),
    "failed": result.count("failed"), "messages": result.message_count,
    "cpu_exporting": exporting, "cpu_other_workspaces": sum(s for o, s in per_workspace if o != "completed"),
    "summary": result.summary(), "breakdown": breakdown,
    "thread_exporting": globals().get("thread_cpu", []), "ping_cpu": ping_cpu,
}))
"""


# ----------------------------------------------------------------------------- data


def seed(client: MongoClient, workspaces: int, big_chats: int) -> list[dict[str, Any]]:
    """Active workspaces with two chats each (the first one with `big_chats`); no messages yet."""
    db = client[DATABASE]
    client.drop_database(DATABASE)
    tenants: list[dict[str, Any]] = []
    workspace_docs, chat_docs = [], []
    for number in range(workspaces):
        workspace_id = ObjectId()
        workspace_docs.append({"_id": workspace_id, "name": f"Tenant {number:05d}", "status": "active"})
        chats = [ObjectId() for _ in range(big_chats if number == 0 else 2)]
        chat_docs += [
            {
                "_id": chat_id,
                "workspace_id": workspace_id,
                "phone_number": "+15550001111",
                "customer_phone": f"+49151{number:05d}{index:04d}",
            }
            for index, chat_id in enumerate(chats)
        ]
        tenants.append({"id": workspace_id, "chats": chats, "email": f"team{number}@tenant.test"})
    for collection, docs in (("workspaces", workspace_docs), ("chats", chat_docs)):
        for offset in range(0, len(docs), BATCH):
            db[collection].insert_many(docs[offset : offset + BATCH])
    # The indexes an operator creates (health asks for them), after the bulk load.
    db.chats.create_index([("workspace_id", 1)])
    db.messages.create_index([("chat_id", 1), ("_id", 1)])
    db.messages.create_index([("chat_id", 1), ("timestamp", 1)])
    return tenants


def add_new_messages(client: MongoClient, tenants: list[dict[str, Any]], exporting: int, each: int) -> list[Any]:
    """A handful of messages arriving now (after the warm-up run), for the first `exporting` workspaces."""
    time.sleep(1.1)  # a new second: later than the warm-up run's window end
    now = datetime.now(UTC)
    docs = []
    for number, tenant in enumerate(tenants[:exporting]):
        chats = tenant["chats"]
        picks = [chats[7], chats[len(chats) // 2], chats[-1]] if number == 0 else chats
        for index in range(each):
            moment = now - timedelta(milliseconds=index)
            docs.append(
                {
                    "_id": object_id_at(moment),
                    "chat_id": picks[index % len(picks)],
                    "direction": ("incoming", "outgoing")[index % 2],
                    "is_ai_generated": index % 3 == 0,
                    "content": f"message {index} for tenant {number}: where is my order?",
                    "timestamp": moment,
                }
            )
    client[DATABASE].messages.insert_many(docs)
    time.sleep(1.1)  # their arrival second is over: the next window includes them
    return [doc["_id"] for doc in docs]


def reset(client: MongoClient, message_ids: list[Any]) -> None:
    db = client[DATABASE]
    for name in ("export_state", "export_logs", "system_logs"):
        db[name].delete_many({})
    if message_ids:
        db.messages.delete_many({"_id": {"$in": message_ids}})


# ----------------------------------------------------------------------------- runs


@contextmanager
def before_tree(ref: str) -> Iterator[Path]:
    """The package as it was at `ref`, unpacked into a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="wa-export-before-") as tmp:
        archive = subprocess.run(
            ["git", "-C", str(HERE.parent), "archive", ref, "src/wa_export"], capture_output=True, check=False
        )
        if archive.returncode != 0:
            raise SystemExit(
                f"bench/scale.py: cannot read git ref {ref!r} ({archive.stderr.decode().strip()}); "
                "pass --before-ref or --skip-before"
            )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        yield Path(tmp) / "src"


def env_for(
    mongo: LocalMongoServer, smtp: SmtpProcess, tenants: list[dict[str, Any]], export_dir: Path, pythonpath: Path | None
) -> dict[str, str]:
    env = base_env(mongo, smtp, export_dir, database=DATABASE, interval_minutes=15)
    env.update({f"WORKSPACE_{tenant['id']}_EMAIL": tenant["email"] for tenant in tenants})
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


def driver_run(env: dict[str, str], cwd: Path, *, quiet: bool = False) -> dict[str, Any]:
    if quiet:
        env = {**env, "BENCH_QUIET": "1"}
    done = subprocess.run(
        [sys.executable, "-c", DRIVER], env=env, cwd=cwd, capture_output=True, text=True, timeout=3600, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"bench/scale.py: the measured run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(
    label: str,
    client: MongoClient,
    mongo: LocalMongoServer,
    smtp: SmtpProcess,
    tenants: list[dict[str, Any]],
    args: argparse.Namespace,
    pythonpath: Path | None,
    work: Path,
) -> dict[str, Any]:
    reset(client, [])
    export_dir = work / f"exports-{label}"
    env = env_for(mongo, smtp, tenants, export_dir, pythonpath)
    print(f"{label}: warm-up run (nothing new) ...", flush=True)
    idle = driver_run(env, work)
    ids = add_new_messages(client, tenants, args.exporting, args.messages)
    print(f"{label}: measured run ({args.exporting} workspaces with {args.messages} new messages) ...", flush=True)
    busy = driver_run(env, work)
    reset(client, ids)
    check_exported(label, busy, args.exporting)
    if label == "before" and not args.before_quiet:
        # The old algorithm's runs take minutes on mongoeco: its CPU comes from the counting run.
        return {"idle": idle, "busy": busy, "cpu_run": busy, "idle_cpu_run": idle}
    # The same run again without the command listener, whose events cost ~0.25 ms of our CPU
    # per command and which production does not have: our CPU is taken from this one.
    # This shared machine's speed moves from minute to minute: the quiet run is repeated and the
    # one with the median CPU per exporting workspace is reported (the others' medians with it).
    quiet_runs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for repeat in range(1, args.cpu_runs + 1):
        print(
            f"{label}: the same again without the command listener, for our CPU ({repeat}/{args.cpu_runs}) ...",
            flush=True,
        )
        idle_quiet = driver_run(env, work, quiet=True)
        ids = add_new_messages(client, tenants, args.exporting, args.messages)
        quiet = driver_run(env, work, quiet=True)
        reset(client, ids)
        check_exported(label, quiet, args.exporting)
        quiet_runs.append((idle_quiet, quiet))
    quiet_runs.sort(key=lambda pair: statistics.median(pair[1]["cpu_exporting"]))
    idle_cpu_run, cpu_run = quiet_runs[len(quiet_runs) // 2]
    cpu_run["run_medians"] = [statistics.median(quiet["cpu_exporting"]) for _, quiet in quiet_runs]
    print(
        f"{label}: our CPU per exporting workspace (median) {statistics.median(cpu_run['cpu_exporting']) * 1000:.1f} ms, "
        f"of it in the delivering thread {statistics.median(cpu_run['thread_exporting'] or [0]) * 1000:.1f} ms",
        flush=True,
    )
    return {"idle": idle, "busy": busy, "cpu_run": cpu_run, "idle_cpu_run": idle_cpu_run}


def check_exported(label: str, run: dict[str, Any], exporting: int) -> None:
    """A measured run must have delivered every exporting workspace, or its figures mean nothing."""
    if run["completed"] != exporting or run["failed"]:
        raise SystemExit(f"bench/scale.py: {label} did not export what it should: {run['summary']}")


INSTRUCTION_ROWS = (10_000, 30_000)  # the two export sizes whose difference gives the instructions per row


def rows_side_by_side(
    before_src: Path | None, work: Path, rounds: int, instructions: bool
) -> dict[str, dict[str, Any]]:
    """bench/run.py's 100k-row export as a scheduled run writes it, before and after, alternating, in
    fresh processes: wall and CPU seconds; with `instructions`, also the instructions per row (callgrind)."""
    labels = [("before", before_src), ("after", None)] if before_src is not None else [("after", None)]
    data = generate_rows(work, 100_000)
    results: dict[str, dict[str, Any]] = {label: {"seconds": [], "cpu": []} for label, _ in labels}
    for _ in range(rounds):
        for label, src in labels:
            measured = export_rows(src, data, work / f"rows-{label}.xlsx")
            results[label]["seconds"].append(measured["seconds"])
            results[label]["cpu"].append(measured["cpu_seconds"])
    if instructions and shutil.which("valgrind"):
        # Instructions do not depend on how busy this shared machine is: the per-row cost is the
        # difference between two sizes (start-up, imports and fixed parts cancel out).
        small, large = generate_rows(work, INSTRUCTION_ROWS[0]), generate_rows(work, INSTRUCTION_ROWS[1])
        for label, src in labels:
            counts = [
                export_rows(src, size, work / f"rows-{label}.xlsx", callgrind=True)["instructions"]
                for size in (small, large)
            ]
            results[label]["instructions_per_row"] = (counts[1] - counts[0]) / (
                INSTRUCTION_ROWS[1] - INSTRUCTION_ROWS[0]
            )
    return results


def generate_rows(work: Path, count: int) -> Path:
    data = work / f"rows-{count}"
    if not data.exists():
        subprocess.run(
            [
                sys.executable,
                "-c",
                (
                    f"import sys; sys.path.insert(0, {str(HERE)!r}); import run; "
                    f"run.generate({count}, __import__('pathlib').Path({str(data)!r}))"
                ),
            ],
            check=True,
        )
    return data


def export_rows(src: Path | None, data: Path, out: Path, callgrind: bool = False) -> dict[str, Any]:
    """One `bench/run.py --child scheduled` export of `data` with the package at `src` (None: this tree)."""
    env = {**os.environ}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    command = [sys.executable, str(HERE / "run.py"), "--child", "scheduled", "--data", str(data), "--out", str(out)]
    if callgrind:
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *command]
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    finally:
        out.unlink(missing_ok=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/scale.py: the {data.name} export failed:\n{done.stderr[-2000:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if callgrind:
        collected = re.search(r"Collected : (\d+)", done.stderr)
        if collected is None:
            raise SystemExit(f"bench/scale.py: callgrind reported no instruction count:\n{done.stderr[-2000:]}")
        measured["instructions"] = int(collected.group(1))
    return measured


# ----------------------------------------------------------------------------- report


def projection(result: dict[str, Any], workspaces: int, target: int) -> dict[str, float]:
    """Commands x RTT + our CPU for `target` workspaces with the same share exporting.

    The measured run scaled linearly: the commands and CPU that grow with the number
    of workspaces and with the exporting ones both grow by target / workspaces. For
    "after" this overstates the fixed part (a handful of commands whatever the
    number of workspaces): the projection is an upper bound.
    """
    scale = target / workspaces
    commands = result["busy"]["commands"] * scale
    cpu = result["cpu_run"]["cpu"] * scale
    return {"commands": commands, "cpu": cpu, "seconds": commands * RTT_MS / 1000 + cpu}


def report(
    results: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]], args: argparse.Namespace, command: str
) -> str:
    info = machine_info()
    lines = [
        "## Scale: a scheduled run over many workspaces, before and after arrival-order delivery (`bench/scale.py`)",
        "",
        f"Command: `{command}` ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC); machine: {info['cpu']}; {info['python']}.",
        (
            f"Data: {args.workspaces:,} active workspaces (two chats each; one has {args.big_chats:,} chats), "
            f"{args.exporting} of them with {args.messages} new messages each (the big one's in 3 of its chats). "
            "Servers: mongoeco (pure Python, its own process on the same cores) and aiosmtpd (STARTTLS + AUTH, its own "
            f'process). "before" is the package at `{args.before_ref}`, unpacked with `git archive`; "after" is this tree. '
            "Each run is one fresh `ExportRun` process: commands and documents are counted with a pymongo "
            "CommandListener; our CPU (`time.process_time()`) is taken from the same run repeated without the listener "
            "(its events cost ~0.25 ms of CPU per command; production has none)"
            + (
                "."
                if args.before_quiet or args.skip_before
                else '; for "before" (minutes per run on mongoeco) from the counting run, listener included.'
            )
        ),
        "",
        "| | before | after |",
        "|---|---:|---:|",
    ]

    def cell(label: str, value: Any) -> str:
        return value if label in results else "—"

    def row(title: str, getter: Any) -> None:
        lines.append(
            f"| {title} | "
            + " | ".join(
                cell(label, getter(results[label])) if label in results else "—" for label in ("before", "after")
            )
            + " |"
        )

    row("wall time of the measured run (mongoeco)", lambda r: f"{r['busy']['wall']:.1f} s")
    row("MongoDB commands, measured run", lambda r: f"{r['busy']['commands']:,}")
    row("MongoDB commands, run with nothing new", lambda r: f"{r['idle']['commands']:,}")
    row("documents read, measured run", lambda r: f"{r['busy']['documents']:,}")
    row("our CPU, whole measured run", lambda r: f"{r['cpu_run']['cpu']:.2f} s")
    row("our CPU, run with nothing new", lambda r: f"{r['idle_cpu_run']['cpu']:.2f} s")
    row(
        "our CPU per exporting workspace (median, inside its export)",
        lambda r: f"{statistics.median(r['cpu_run']['cpu_exporting']) * 1000:.1f} ms",
    )
    row(
        "the same with the command listener on (the counting run)",
        lambda r: f"{statistics.median(r['busy']['cpu_exporting']) * 1000:.1f} ms",
    )
    row(
        "for scale: our CPU for one `ping` round trip, same process, after the run",
        lambda r: f"{r['cpu_run']['ping_cpu'] * 1000:.2f} ms",
    )
    row(
        "MongoDB commands per workspace of the measured run", lambda r: f"{r['busy']['commands'] / args.workspaces:.2f}"
    )
    for label in ("before", "after"):
        if label in results:
            results[label]["projection"] = projection(results[label], args.workspaces, args.project)
    row(
        f"projected run, {args.project:,} workspaces ({args.exporting / args.workspaces:.0%} exporting) on a real "
        f"MongoDB at {RTT_MS} ms round trips",
        lambda r: (
            f"{r['projection']['seconds']:.1f} s ({r['projection']['commands']:,.0f} commands, "
            f"{r['projection']['cpu']:.1f} s CPU)"
        ),
    )
    lines.append("")
    lines.append(
        "Projection: the measured run's commands × the round trip + its measured CPU (our process), both scaled "
        'linearly to the projected number of workspaces with the same share exporting (for "after" an upper '
        "bound: its fixed commands do not grow); MongoDB's own query time and the SMTP server's time are not "
        "in it."
    )
    if rows:
        labels = [label for label in ("before", "after") if label in rows]
        lines += [
            "",
            "100,000-row single-workspace export as a scheduled run writes it (`bench/run.py --child "
            "scheduled`: rows.py → the template writer, or the openpyxl writer in a tree without one), "
            f"alternating, {len(rows['after']['seconds'])} rounds, fresh process each"
            + (
                f"; instructions per row with callgrind, the difference between a {INSTRUCTION_ROWS[0]:,}- and "
                f"a {INSTRUCTION_ROWS[1]:,}-row export (independent of this shared machine's load)"
                if "instructions_per_row" in rows["after"]
                else ""
            )
            + ":",
            "",
            "| | " + " | ".join(labels) + " |",
            "|---|" + "---:|" * len(labels),
        ]
        lines.append(
            "| wall seconds (median) | "
            + " | ".join(f"{statistics.median(rows[label]['seconds']):.2f}" for label in labels)
            + " |"
        )
        lines.append(
            "| CPU seconds (median) | "
            + " | ".join(f"{statistics.median(rows[label]['cpu']):.2f}" for label in labels)
            + " |"
        )
        if all("instructions_per_row" in rows[label] for label in labels):
            lines.append(
                "| instructions per row | "
                + " | ".join(f"{rows[label]['instructions_per_row']:,.0f}" for label in labels)
                + " |"
            )
    if "after" in results and results["after"]["cpu_run"].get("breakdown"):
        busy = results["after"]["cpu_run"]
        lines += [
            "",
            "Where \"after\"'s CPU per exporting workspace goes (the delivering thread's CPU, mean over the "
            "run without the listener; nested steps are counted in both, `find` without iterating its cursor):",
            "",
            "| step | ms |",
            "|---|---:|",
        ]
        lines.append(f"| whole delivery | {statistics.mean(busy['thread_exporting']) * 1000:.2f} |")
        for label, seconds in sorted(busy["breakdown"].items(), key=lambda item: -item[1]):
            lines.append(f"| {label} | {seconds / busy['completed'] * 1000:.2f} |")
    if "after" in results:
        after = results["after"]
        median_ms = statistics.median(after["cpu_run"]["cpu_exporting"]) * 1000
        lines += ["", "Targets:", ""]
        lines.append(
            f"- projected {args.project:,}-workspace run: **{after['projection']['seconds']:.1f} s** "
            f"(target < 60 s: {'met' if after['projection']['seconds'] < 60 else 'NOT met'})"
        )
        ping_ms = after["cpu_run"]["ping_cpu"] * 1000
        runs = ", ".join(f"{seconds * 1000:.1f}" for seconds in after["cpu_run"].get("run_medians", []))
        lines.append(
            f"- our CPU per exporting workspace: **{median_ms:.1f} ms** "
            f"(target ≤ 10 ms: {'met' if median_ms <= 10 else 'NOT met'}), the median run of "
            f"{args.cpu_runs} (their medians: {runs} ms); the CPU of "
            f"{median_ms / ping_ms:.0f} `ping` round trips on this machine at that moment ({ping_ms:.2f} ms each)"
        )
        fixed = after["idle"]["commands"]
        per = (after["busy"]["commands"] - fixed) / args.exporting
        lines.append(
            f"- MongoDB commands: {fixed} for a run over {args.workspaces:,} workspaces with nothing new, "
            f"+ **{per:.1f}** per exporting workspace (target ≤ a small constant + 8 per exporting workspace: "
            f"{'met' if per <= 8 else 'NOT met'})"
        )
        if "before" in rows and "after" in rows:
            ratio = statistics.median(rows["after"]["cpu"]) / statistics.median(rows["before"]["cpu"])
            line = f"- 100k rows after / before, CPU seconds: **{ratio:.2f}**"
            if "instructions_per_row" in rows["after"] and "instructions_per_row" in rows["before"]:
                per_row = rows["after"]["instructions_per_row"] / rows["before"]["instructions_per_row"]
                line += (
                    f"; instructions per row: **{per_row:.2f}** (target ≤ 1.0: "
                    f"{'met' if per_row <= 1.0 else 'NOT met'})"
                )
            lines.append(line + "; wall and CPU seconds vary ±20% from run to run on this machine")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=1_000)
    parser.add_argument("--exporting", type=int, default=50)
    parser.add_argument("--messages", type=int, default=5, help="new messages per exporting workspace")
    parser.add_argument("--big-chats", type=int, default=5_000)
    parser.add_argument("--project", type=int, default=10_000, help="workspaces of the projected run")
    parser.add_argument("--before-ref", default=BEFORE_REF)
    parser.add_argument("--skip-before", action="store_true")
    parser.add_argument(
        "--before-quiet",
        action="store_true",
        help="measure the old algorithm's CPU without the listener too (adds ~10 minutes)",
    )
    parser.add_argument("--skip-rows", action="store_true", help="skip the 100k-row comparison")
    parser.add_argument(
        "--cpu-runs",
        type=int,
        default=3,
        help="quiet runs for our CPU; the one with the median CPU per exporting workspace is reported",
    )
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the 100k-row comparison")
    parser.add_argument(
        "--skip-instructions",
        action="store_true",
        help="skip the instruction count of the row comparison (callgrind, ~4 minutes; also skipped without valgrind)",
    )
    parser.add_argument("--no-results", action="store_true", help=f"print only, do not update {RESULTS}")
    args = parser.parse_args(argv)
    command = "python bench/scale.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))

    results: dict[str, dict[str, Any]] = {}
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="wa-export-scale-") as tmp:
        work = Path(tmp)
        mongo = LocalMongoServer().start()
        smtp = SmtpProcess()
        try:
            client: MongoClient[dict[str, Any]] = MongoClient(mongo.uri, tz_aware=True, socketTimeoutMS=600_000)
            started = time.perf_counter()
            tenants = seed(client, args.workspaces, args.big_chats)
            print(f"seeded {args.workspaces:,} workspaces in {time.perf_counter() - started:.0f} s", flush=True)
            if args.skip_before:
                results["after"] = measure("after", client, mongo, smtp, tenants, args, None, work)
            else:
                with before_tree(args.before_ref) as before_src:
                    results["before"] = measure("before", client, mongo, smtp, tenants, args, before_src, work)
                    results["after"] = measure("after", client, mongo, smtp, tenants, args, None, work)
                    if not args.skip_rows:
                        print("100k-row export, before and after ...", flush=True)
                        rows = rows_side_by_side(before_src, work, args.rounds, not args.skip_instructions)
            if args.skip_before and not args.skip_rows:
                rows = rows_side_by_side(None, work, args.rounds, not args.skip_instructions)
            client.close()
        finally:
            smtp.stop()
            mongo.stop()
    body = report(results, rows, args, command)
    print(body)
    if not args.no_results:
        write_section(RESULTS, "scale", body)
        print(f"wrote the section to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
