"""Our CPU for one MongoDB command, hot and after the process slept (the per-workspace floor).

    .venv/bin/python bench/command_cpu.py

A scheduled delivery makes five MongoDB commands, each after other work (a
workbook, an email) or a wait for the server, so the command never runs with
warm caches the way it does in a tight loop. This measures the same
`update_one` against the test MongoDB (its own process) three ways, with the
calling thread's CPU (`time.thread_time()`): back to back, after touching 8 MB
of unrelated memory, and after a 10 ms sleep. Prints only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import MongoClient

from wa_export.demo.servers import LocalMongoServer

ROUNDS = 200


def main() -> int:
    server = LocalMongoServer().start()
    try:
        client: MongoClient[dict[str, Any]] = MongoClient(server.uri, tz_aware=True)
        state = client.bench_command_cpu.export_state
        state.insert_one({"_id": "workspace", "n": 0})

        def command() -> None:
            state.update_one({"_id": "workspace", "lease_owner": None}, {"$set": {"at": datetime.now(UTC)}})

        scratch = bytearray(8 << 20)

        def touch_memory() -> None:
            for index in range(0, len(scratch), 64):
                scratch[index] = 1

        between: dict[str, Callable[[], None] | None] = {
            "back to back": None,
            "after touching 8 MB": touch_memory,
            "after a 10 ms sleep": lambda: time.sleep(0.01),
        }
        for _ in range(20):
            command()
        for label, before in between.items():
            total = 0.0
            for _ in range(ROUNDS):
                if before is not None:
                    before()
                started = time.thread_time()
                command()
                total += time.thread_time() - started
            print(f"update_one, {label}: {total / ROUNDS * 1000:.2f} ms of our CPU")
        client.drop_database("bench_command_cpu")
        client.close()
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
