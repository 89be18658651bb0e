"""`wa-export export --workers N`: one scheduled run shared by N child processes (the work holds the GIL).
Child k is `wa-export export --json --worker-slot k/N` (every N-th workspace; leases still decide). The
parent never talks to MongoDB: it merges the children's JSON, exits with the worst code, forwards SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from wa_export.errors import ExitCode, UsageProblem
from wa_export.export.context import ExportRequest
from wa_export.export.results import RunWarning, WorkspaceResult, merged_anomalies, summary_line
from wa_export.units import count_noun

MAX_WORKERS = 64

T = TypeVar("T")


class WorkerUsageError(UsageProblem):
    """A bad --workers / --worker-slot value; one sentence for the operator (exit 2)."""


def parse_worker_slot(text: str) -> tuple[int, int]:
    """`"k/N"` -> (k, N) with 0 <= k < N <= MAX_WORKERS."""
    try:
        index_text, count_text = text.split("/", 1)
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise WorkerUsageError(f"--worker-slot {text!r} must look like K/N, e.g. 0/2.") from None
    if not (1 <= count <= MAX_WORKERS and 0 <= index < count):
        raise WorkerUsageError(f"--worker-slot {text!r} needs 0 <= K < N <= {MAX_WORKERS}.")
    return index, count


def check_request(count: int, *, is_manual: bool) -> None:
    """Workers share a scheduled run; a manual export runs in one process."""
    if not 1 <= count <= MAX_WORKERS:
        raise WorkerUsageError(f"--workers must be between 1 and {MAX_WORKERS}, got {count}.")
    if count > 1:
        check_slot_request(is_manual)


def check_slot_request(is_manual: bool) -> None:
    """A --worker-slot (set by `--workers N` on its children) exists only in a scheduled run."""
    if is_manual:
        raise WorkerUsageError(
            "--workers applies to scheduled runs only; a manual export (--hours/--since/--until/--email) "
            "runs in one process, drop --workers."
        )


def slot_share(items: Sequence[T], slot: tuple[int, int] | None) -> list[T]:
    """The part of a (stably ordered) list that worker slot k of N exports: every N-th, from k."""
    return list(items if slot is None else items[slot[0] :: slot[1]])


@dataclass
class WorkerOutcome:
    slot: int
    exit_code: int
    document: dict[str, Any]  # the child's --json result; empty when it gave none (then `error` says why)
    error: str | None = None


@dataclass
class WorkersResult:
    count: int
    started_at: float
    finished_at: float
    workers: list[WorkerOutcome] = field(default_factory=list)
    interrupted: bool = False
    warnings: list[RunWarning] = field(default_factory=list)  # set by the caller

    @property
    def exit_code(self) -> ExitCode:
        code = ExitCode.worst([worker.exit_code for worker in self.workers])
        return ExitCode.FAILED if self.interrupted and code == ExitCode.OK else code

    @property
    def workspaces(self) -> list[WorkspaceResult]:
        return [WorkspaceResult.from_dict(ws) for w in self.workers for ws in w.document.get("workspaces", [])]

    def anomaly_totals(self) -> dict[str, int]:
        return merged_anomalies(
            [ws.anomalies for ws in self.workspaces],
            [w.document.get("run_anomalies") or {} for w in self.workers],
        )

    @property
    def orphaned_messages(self) -> int:
        return max((int(w.document.get("orphaned_messages") or 0) for w in self.workers), default=0)

    @property
    def problems(self) -> list[str]:
        found = [str(problem) for w in self.workers for problem in w.document.get("problems") or []]
        return list(dict.fromkeys(found))

    def summary(self) -> str:
        broken = [f"worker {w.slot} exit {w.exit_code}: {w.error}" for w in self.workers if w.error is not None]
        problems = [f"{count_noun(len(broken), 'worker')} failed: " + "; ".join(broken)] if broken else []
        header = f"scheduled export run with {count_noun(self.count, 'worker')}"
        return summary_line(header, self.workspaces, self.anomaly_totals(), self.interrupted, problems + self.problems)

    def as_dict(self) -> dict[str, Any]:
        workspaces = self.workspaces
        return {  # the children's runs merged, in the shape of one run's JSON
            "ok": self.exit_code == ExitCode.OK,
            "trigger": "scheduled",
            "workers": self.count,
            "exit_code": self.exit_code,
            "interrupted": self.interrupted,
            "duration_seconds": round(self.finished_at - self.started_at, 3),
            "message_count": sum(ws.message_count for ws in workspaces),
            "orphaned_messages": self.orphaned_messages,
            "anomalies": self.anomaly_totals(),
            "problems": self.problems,
            "summary": self.summary(),
            "runs": [
                {
                    "slot": w.slot,
                    "exit_code": w.exit_code,
                    "run_id": w.document.get("run_id"),
                    "summary": w.document.get("summary"),
                    "error": w.error or w.document.get("error"),
                }
                for w in self.workers
            ],
            "workspaces": [ws.as_dict() for ws in workspaces],
            "warnings": [dataclasses.asdict(warning) for warning in self.warnings],
        }


def run_workers(count: int, request: ExportRequest, env_file: Path | None, stop: threading.Event) -> WorkersResult:
    """Run the scheduled export as `count` child processes and merge their results."""
    command = [sys.executable, "-m", "wa_export", *(["--env-file", str(env_file)] if env_file else []), "export"]
    command += ["--json", *(["--dry-run"] if request.dry_run else []), *([] if request.send_email else ["--no-email"])]
    command += [part for workspace_id in request.workspace_ids for part in ("--workspace", workspace_id)]
    started = time.time()
    children: list[tuple[subprocess.Popen[bytes], Any]] = []
    forwarded = False

    def terminate() -> None:
        for proc, _ in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    try:
        for slot in range(count):
            out = tempfile.TemporaryFile()  # not a pipe: a big JSON document must never block a child
            # stderr inherited: a child's warnings and tracebacks reach the parent's as they are
            slot_option = ["--worker-slot", f"{slot}/{count}"]
            children.append((subprocess.Popen([*command, *slot_option], stdout=out, stdin=subprocess.DEVNULL), out))
        while any(proc.poll() is None for proc, _ in children):
            if stop.is_set() and not forwarded:
                forwarded = True
                terminate()
            time.sleep(0.2)
    except BaseException:
        terminate()  # never leave orphans running behind a crashed parent
        for proc, _ in children:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    result = WorkersResult(count=count, started_at=started, finished_at=time.time(), interrupted=forwarded)
    for slot, (proc, out) in enumerate(children):
        with out:
            out.seek(0)
            result.workers.append(_outcome(slot, proc.returncode, out.read().decode("utf-8", "replace")))
    return result


def _outcome(slot: int, returncode: int, stdout: str) -> WorkerOutcome:
    code = returncode if returncode >= 0 else 1  # killed by a signal: its work is unfinished
    try:
        document = json.loads(stdout)
        error = None if isinstance(document, dict) else "unexpected JSON result"
    except json.JSONDecodeError:
        document, error = None, f"killed by signal {-returncode}" if returncode < 0 else "no JSON result on stdout"
    if error is None and "workspaces" not in document:  # an error document: {"ok": false, "error": ...}
        error = str(document.get("error") or "failed")
    return WorkerOutcome(slot, code, {}, error) if error is not None else WorkerOutcome(slot, code, document)
