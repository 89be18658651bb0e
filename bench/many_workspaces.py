"""Many workspaces, few messages each: where does a scheduled run's time go?

    .venv/bin/python bench/many_workspaces.py                 # 200 workspaces x 5 messages, profile + workers
    .venv/bin/python bench/many_workspaces.py --skip-workers  # the profile only

Starts its own servers on 127.0.0.1: mongoeco (a subprocess, LocalMongoServer)
and aiosmtpd with STARTTLS + AUTH (also a subprocess, so its work never competes
for this process's GIL). Seeds the database once (inserts in batches of <= 500).

1. Profile: one real scheduled run in this process under cProfile. Time in
   blocking socket/TLS/select calls is attributed to MongoDB or SMTP by walking
   the profile's call graph up to pymongo or smtplib/yagmail; the rest of the
   run is CPU in this process (our code and the libraries it calls). A pymongo
   CommandListener cross-checks (command count and server round-trip time) and
   psutil reports the servers' own CPU time.
2. Workers: the same run as `wa-export export --workers N --json` subprocesses,
   N = 1 and 2 alternating, export_state reset between runs; wall time, the
   children's CPU and the MongoDB server's CPU.

Results go to bench/RESULTS.md (section `many_workspaces`).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from bson import ObjectId
from pymongo import MongoClient, monitoring

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import RESULTS, machine_info, write_section
from wa_export.demo.servers import LocalMongoServer
from wa_export.export.run import ExportRequest, ExportRun
from wa_export.settings import load_settings
from wa_export.store.connection import Store

DATABASE = "wa_export_bench"
_SMTP_CHILD = r"""
import sys, time
from wa_export.demo.servers import LocalSmtpServer
server = LocalSmtpServer().start()
print(server.port, server.ca_cert_path, server.username, server.password, flush=True)
sys.stdin.read()  # until the parent closes our stdin
print(len(server.messages), file=sys.stderr, flush=True)
server.stop()
"""


class SmtpProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SMTP_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        port, ca, user, password = self.proc.stdout.readline().split()
        self.port, self.ca, self.username, self.password = int(port), ca, user, password

    def stop(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Timing(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0
        self.micros = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        self.micros += event.duration_micros

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.micros += event.duration_micros


def seed(client: MongoClient, workspaces: int, messages_each: int) -> dict[str, str]:
    db = client[DATABASE]
    db.chats.create_index([("workspace_id", 1)])
    db.messages.create_index([("chat_id", 1), ("timestamp", 1)])
    now = dt.datetime.now(dt.UTC)
    env: dict[str, str] = {}
    ws_docs, chat_docs, msg_docs = [], [], []
    for number in range(workspaces):
        workspace_id = ObjectId()
        ws_docs.append({"_id": workspace_id, "name": f"Tenant {number:04d}", "status": "active"})
        chat_id = ObjectId()
        chat_docs.append(
            {
                "_id": chat_id,
                "workspace_id": workspace_id,
                "phone_number": "+15550001111",
                "customer_phone": f"+49151{number:08d}",
            }
        )
        for index in range(messages_each):
            msg_docs.append(
                {
                    "_id": ObjectId(),
                    "chat_id": chat_id,
                    "direction": ("incoming", "outgoing")[index % 2],
                    "is_ai_generated": index % 3 == 0,
                    "content": f"message {index} of tenant {number}",
                    "timestamp": now - dt.timedelta(minutes=5, milliseconds=index),
                }
            )
        env[f"WORKSPACE_{workspace_id}_EMAIL"] = f"team{number}@tenant.test"
    for collection, docs in (("workspaces", ws_docs), ("chats", chat_docs), ("messages", msg_docs)):
        for offset in range(0, len(docs), 500):
            db[collection].insert_many(docs[offset : offset + 500])
    return env


def base_env(
    mongo: LocalMongoServer,
    smtp: SmtpProcess,
    export_dir: Path,
    *,
    database: str = DATABASE,
    interval_minutes: int = 240,
) -> dict[str, str]:
    """A bench child's whole environment: the loopback servers, nothing of the caller's wa-export settings."""
    env = {key: os.environ[key] for key in ("PATH", "LANG", "HOME", "TMPDIR", "BENCH_PROFILE") if key in os.environ}
    env.update(
        MONGODB_URI=mongo.uri,
        MONGODB_DATABASE=database,
        SMTP_SERVER="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        SMTP_USERNAME=smtp.username,
        SMTP_PASSWORD=smtp.password,
        SMTP_FROM="bench@wa-export.test",
        SMTP_SECURITY="starttls",
        SMTP_CA_FILE=smtp.ca,
        EXPORT_DIR=str(export_dir),
        EXPORT_LAG_SECONDS="0",
        EXPORT_INTERVAL_MINUTES=str(interval_minutes),
    )
    return env


def reset(client: MongoClient) -> None:
    db = client[DATABASE]
    for name in ("export_state", "export_logs", "system_logs"):
        db[name].delete_many({})


# ----------------------------------------------------------------------------- profile attribution

_BLOCKING = (
    "recv_into",
    "recv'",
    "sendall",
    "'send'",
    "_ssl._SSLSocket",
    "select",
    "poll",
    "connect",
    "getaddrinfo",
    "do_handshake",
)


def _owner(func: tuple[str, int, str], raw: dict, memo: dict, depth: int = 0) -> str:
    if func in memo:
        return memo[func]
    filename = func[0]
    if "/pymongo/" in filename:
        owner = "mongodb"
    elif "smtplib" in filename or "yagmail" in filename or filename.endswith("wa_export/mail.py"):
        owner = "smtp"
    elif depth > 25 or func not in raw:
        owner = "other"
    else:
        memo[func] = "other"  # cycle guard
        votes: dict[str, float] = {}
        for caller, (_, _, _, cumulative) in raw[func][4].items():
            who = _owner(caller, raw, memo, depth + 1)
            votes[who] = votes.get(who, 0.0) + cumulative
        owner = max(votes, key=votes.__getitem__) if votes else "other"
    memo[func] = owner
    return owner


def attribute(profile: pstats.Stats) -> dict[str, float]:
    raw = profile.stats  # type: ignore[attr-defined]
    memo: dict = {}
    waits = {"mongodb": 0.0, "smtp": 0.0, "other": 0.0, "fsync": 0.0}
    for func, (_, _, own, _, callers) in raw.items():
        if func[0] == "~" and "fsync" in func[2]:
            waits["fsync"] += own  # durability of each workbook before it is mailed
            continue
        if func[0] != "~" or not any(mark in func[2] for mark in _BLOCKING):
            continue
        for caller, (_, _, from_caller, _) in callers.items():
            waits[_owner(caller, raw, memo)] += from_caller
        if not callers:
            waits["other"] += own
    return waits


def top_functions(profile: pstats.Stats, limit: int = 12) -> list[str]:
    raw = profile.stats  # type: ignore[attr-defined]
    ours = [(ct, func) for func, (_, _, _, ct, _) in raw.items() if "/wa_export/" in func[0]]
    lines = []
    for ct, (filename, line, name) in sorted(ours, reverse=True)[:limit]:
        lines.append(f"| `{Path(filename).name}:{line} {name}` | {ct:.3f} |")
    return lines


def profile_run(mongo: LocalMongoServer, smtp: SmtpProcess, env: dict[str, str], workspaces: int) -> dict[str, Any]:
    settings = load_settings(environ=env)
    timing = Timing()
    client: MongoClient = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[timing])
    client.admin.command("ping")
    timing.count = timing.micros = 0
    server = psutil.Process(mongo.pid)
    smtp_server = psutil.Process(smtp.proc.pid)
    server_cpu0, smtp_cpu0 = sum(server.cpu_times()[:2]), sum(smtp_server.cpu_times()[:2])
    cpu0 = time.process_time()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    result = ExportRun(settings, Store(client, settings), ExportRequest()).execute()
    profiler.disable()
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu0
    smtp_cpu = sum(smtp_server.cpu_times()[:2]) - smtp_cpu0
    client.close()
    assert result.count("completed") == workspaces, result.summary()
    stats = pstats.Stats(profiler)
    waits = attribute(stats)
    return {
        "wall": wall,
        "cpu": cpu,
        "server_cpu": server_cpu,
        "smtp_cpu": smtp_cpu,
        "waits": waits,
        "commands": timing.count,
        "command_seconds": timing.micros / 1e6,
        "top": top_functions(stats),
        "messages": result.message_count,
        "profile": stats,
    }


# ----------------------------------------------------------------------------- workers


def workers_run(
    client: MongoClient, mongo: LocalMongoServer, env: dict[str, str], count: int, workspaces: int
) -> dict[str, Any]:
    reset(client)
    export_dir = Path(tempfile.mkdtemp(prefix="wa-export-bench-exports-"))
    run_env = {**env, "EXPORT_DIR": str(export_dir)}
    server = psutil.Process(mongo.pid)
    server_cpu0 = sum(server.cpu_times()[:2])
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "wa-export"), "export", "--workers", str(count), "--json"],
        env=run_env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - started
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = sum(server.cpu_times()[:2]) - server_cpu0
    shutil.rmtree(export_dir, ignore_errors=True)
    document = json.loads(done.stdout)
    emailed = sum(1 for ws in document["workspaces"] if ws["outcome"] == "completed")
    if done.returncode != 0 or emailed != workspaces:
        raise SystemExit(f"--workers {count} failed: exit {done.returncode}, {emailed} emailed\n{done.stderr[-2000:]}")
    client_cpu = (children1.ru_utime + children1.ru_stime) - (children0.ru_utime + children0.ru_stime)
    return {"wall": wall, "client_cpu": client_cpu, "server_cpu": server_cpu}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspaces", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5, help="messages per workspace")
    parser.add_argument("--repeats", type=int, default=2, help="runs per worker count (alternating)")
    parser.add_argument("--skip-workers", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-results", action="store_true", help="print only")
    args = parser.parse_args(argv)
    command = "python bench/many_workspaces.py" + (" " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else "")

    W = args.workspaces
    lines: list[str] = []
    smtp = SmtpProcess()
    export_dir = Path(tempfile.mkdtemp(prefix="wa-export-bench-exports-"))
    try:
        with LocalMongoServer() as mongo:
            client: MongoClient = MongoClient(mongo.uri, tz_aware=True)
            started = time.perf_counter()
            emails = seed(client, W, args.messages)
            print(
                f"seeded {W} workspaces x {args.messages} messages in {time.perf_counter() - started:.1f} s", flush=True
            )
            env = {**base_env(mongo, smtp, export_dir), **emails}

            p = profile_run(mongo, smtp, env, W)
            waits = p["waits"]
            ours = p["wall"] - waits["mongodb"] - waits["smtp"] - waits["other"] - waits["fsync"]
            per = lambda seconds: f"{seconds / W * 1000:.1f}"  # noqa: E731
            lines += [
                f"### Profile of one scheduled run: {W} workspaces × {args.messages} messages (cProfile, in process)",
                "",
                "| where the run's wall time went | total (s) | per workspace (ms) | share |",
                "|---|---:|---:|---:|",
                f"| waiting on MongoDB (socket send/recv + select under pymongo) | {waits['mongodb']:.2f} | {per(waits['mongodb'])} | {waits['mongodb'] / p['wall']:.0%} |",
                f"| waiting on SMTP (TLS/socket under smtplib/yagmail) | {waits['smtp']:.2f} | {per(waits['smtp'])} | {waits['smtp'] / p['wall']:.0%} |",
                f"| disk: fsync of each workbook and its folder | {waits['fsync']:.2f} | {per(waits['fsync'])} | {waits['fsync'] / p['wall']:.0%} |",
                f"| other blocking calls | {waits['other']:.2f} | {per(waits['other'])} | {waits['other'] / p['wall']:.0%} |",
                f"| our process's own work (our code + openpyxl, pymongo, email libraries) | {ours:.2f} | {per(ours)} | {ours / p['wall']:.0%} |",
                f"| **whole run** (profiled) | {p['wall']:.2f} | {per(p['wall'])} | |",
                "",
                f"Cross-checks: process CPU time {p['cpu']:.2f} s ({per(p['cpu'])} ms/workspace); "
                f"{p['commands']} MongoDB commands ({p['commands'] / W:.1f} per workspace), "
                f"summed round trips {p['command_seconds']:.2f} s (CommandListener); "
                f"mongoeco server CPU during the run {p['server_cpu']:.2f} s, SMTP server CPU {p['smtp_cpu']:.2f} s. "
                "cProfile's own overhead inflates the CPU share.",
                "",
                "Our functions by cumulative time:",
                "",
                "| function | cumulative (s) |",
                "|---|---:|",
                *p["top"],
            ]
            print("\n".join(lines), flush=True)
            p["profile"].sort_stats("cumulative").print_stats(25)

            if not args.skip_workers:
                runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
                for _ in range(args.repeats):
                    for count in (1, 2):
                        run = workers_run(client, mongo, env, count, W)
                        runs[count].append(run)
                        print(
                            f"--workers {count}: {run['wall']:.2f} s wall, client CPU {run['client_cpu']:.2f} s, "
                            f"mongoeco CPU {run['server_cpu']:.2f} s",
                            flush=True,
                        )
                med = {n: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for n, rs in runs.items()}
                speedup = med[1]["wall"] / med[2]["wall"]
                worker_lines = [
                    "",
                    f"### `wa-export export --workers N` on the same {W} workspaces (subprocess, median of {args.repeats})",
                    "",
                    "| workers | wall (s) | wa-export CPU (s, all processes) | mongoeco server CPU (s) |",
                    "|---:|---:|---:|---:|",
                    *(
                        f"| {n} | {m['wall']:.2f} | {m['client_cpu']:.2f} | {m['server_cpu']:.2f} |"
                        for n, m in med.items()
                    ),
                    "",
                    f"Speed-up of `--workers 2` over `--workers 1`: **{speedup:.2f}×**.",
                ]
                lines += worker_lines
                print("\n".join(worker_lines), flush=True)
            client.close()
    finally:
        smtp.stop()
        shutil.rmtree(export_dir, ignore_errors=True)

    if not args.no_results:
        info = machine_info()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        body = "\n".join(
            [
                "## Many workspaces (`bench/many_workspaces.py`)",
                "",
                f"Command: `{command}` ({stamp}); machine: {info['cpu']}; {info['python']}.",
                "Servers: mongoeco (pure-Python MongoDB wire server, its own process on the same cores) and aiosmtpd"
                " with STARTTLS + AUTH (its own process).",
                "",
                *lines,
            ]
        )
        write_section(args.results, "many_workspaces", body)
        print(f"\nwrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
