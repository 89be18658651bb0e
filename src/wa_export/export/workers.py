"""`export --workers N`: child k runs `export --json --worker-slot k/N` (every N-th workspace; leases still decide).
The parent never talks to MongoDB: it merges the children's JSON, exits with the worst code, forwards SIGTERM."""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar

from wa_export.errors import ExitCode, UsageProblem
from wa_export.export.results import ExportRequest, RunResult, RunWarning, WorkspaceResult
from wa_export.units import count_noun

MAX_WORKERS = 64

T = TypeVar("T")


class WorkerUsageError(UsageProblem):  # a bad --workers / --worker-slot value (exit 2)
    pass


def parse_worker_slot(text: str) -> tuple[int, int]:  # "k/N" -> (k, N)
    try:
        index_text, count_text = text.split("/", 1)
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise WorkerUsageError(f"--worker-slot {text!r} must look like K/N, e.g. 0/2.") from None
    if not (1 <= count <= MAX_WORKERS and 0 <= index < count):
        raise WorkerUsageError(f"--worker-slot {text!r} needs 0 <= K < N <= {MAX_WORKERS}.")
    return index, count


def check_request(count: int, *, is_manual: bool) -> None:
    if not 1 <= count <= MAX_WORKERS:
        raise WorkerUsageError(f"--workers must be between 1 and {MAX_WORKERS}, got {count}.")
    if count > 1:
        check_slot_request(is_manual)


def check_slot_request(is_manual: bool) -> None:  # a --worker-slot too: workers share a scheduled run only
    if is_manual:
        raise WorkerUsageError(
            "--workers applies to scheduled runs only; a manual export (--hours/--since/--until/--email) "
            "runs in one process, drop --workers."
        )


def slot_share(items: Sequence[T], slot: tuple[int, int] | None) -> list[T]:  # slot k of N: every N-th, from k
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

    @cached_property
    def run(self) -> RunResult:
        """The children's runs as one; run-level counts are taken once (one child counts them), of the children's
        warnings only a workspace stored twice (the rest is judged over all of them: `export_in_workers`)."""
        started = datetime.fromtimestamp(self.started_at, UTC)
        run = RunResult("", "scheduled", False, started, interrupted=self.interrupted)
        for worker in self.workers:
            run.workspaces += [WorkspaceResult.from_dict(ws) for ws in worker.document.get("workspaces", [])]
            run.problems += [str(p) for p in worker.document.get("problems") or [] if str(p) not in run.problems]
            run.run_anomalies = dict(Counter(run.run_anomalies) | Counter(worker.document.get("run_anomalies") or {}))
            warnings = worker.document.get("warnings") or []
            run.warnings += [RunWarning(**w) for w in warnings if w.get("kind") == "duplicate_workspace"]
        return run

    @property
    def workspaces(self) -> list[WorkspaceResult]:
        return self.run.workspaces

    @property
    def problems(self) -> list[str]:
        return self.run.problems

    def anomaly_totals(self) -> dict[str, int]:
        return self.run.anomaly_totals()

    def summary(self) -> str:
        broken = [f"worker {w.slot} exit {w.exit_code}: {w.error}" for w in self.workers if w.error is not None]
        problems = [f"{count_noun(len(broken), 'worker')} failed: " + "; ".join(broken)] if broken else []
        return self.run.summary(f"scheduled export run with {count_noun(self.count, 'worker')}", problems)

    def as_dict(self) -> dict[str, Any]:  # the children's runs merged, in the shape of one run's JSON
        runs = [
            {"slot": w.slot, "exit_code": w.exit_code, "error": w.error or w.document.get("error")}
            | {key: w.document.get(key) for key in ("run_id", "summary")}
            for w in self.workers
        ]
        merged = self.run.as_dict()
        for key in ("run_id", "dry_run", "started_at", "finished_at", "run_anomalies"):
            del merged[key]  # the children's: in `runs`
        return merged | {
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "warnings": [dataclasses.asdict(warning) for warning in self.warnings],
            "workers": self.count,
            "duration_seconds": round(self.finished_at - self.started_at, 3),
            "runs": runs,
        }


def run_workers(count: int, request: ExportRequest, env_file: Path | None, stop: threading.Event) -> WorkersResult:
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
            child = [*command, "--worker-slot", f"{slot}/{count}"]
            children.append((subprocess.Popen(child, stdout=out, stdin=subprocess.DEVNULL), out))
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
