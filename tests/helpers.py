"""Helpers shared by the tests: reading workbooks, captured mail and what a run left in MongoDB or on disk."""

from __future__ import annotations

import asyncio
import io
import json
import os
import resource
import select
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any
from urllib.parse import quote, quote_plus

from openpyxl import load_workbook
from pymongo import MongoClient, monitoring

from seeding import cli_executable
from servers import CapturedMessage, LocalSmtpServer
from wa_export.export.results import ExportRequest, RunResult
from wa_export.export.run import ExportRun
from wa_export.settings import RULES, Settings
from wa_export.store.connection import Store

XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def sheet_rows(source: Path | bytes) -> list[tuple[Any, ...]]:
    """All rows of every sheet after the header, in order."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    workbook = load_workbook(handle)
    rows: list[tuple[Any, ...]] = []
    for sheet in workbook.worksheets:
        rows.extend(tuple(cell.value for cell in row) for row in sheet.iter_rows(min_row=2))
    return rows


def attachments(message: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(filename, content type, payload) of each attachment."""
    found = []
    for part in message.iter_attachments():
        payload = part.get_payload(decode=True)
        assert isinstance(payload, bytes)
        found.append((part.get_filename() or "", part.get_content_type(), payload))
    return found


def mailed_rows(captured: CapturedMessage) -> list[tuple[Any, ...]]:
    parts = attachments(captured.message())
    assert len(parts) == 1, f"expected one attachment, got {[name for name, _, _ in parts]}"
    return sheet_rows(parts[0][2])


def mailed_contents(captured_messages: list[CapturedMessage]) -> list[str]:
    """Message Content column of every row of every mailed workbook."""
    return [row[2] for captured in captured_messages for row in mailed_rows(captured)]


def plain_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "no text/plain part"
    return part.get_content()


def parse_json(result: CompletedProcess[str]) -> dict[str, Any]:
    try:
        document = json.loads(result.stdout)
    except json.JSONDecodeError as error:
        raise AssertionError(f"stdout is not one JSON document: {error}\n{result.stdout}\n{result.stderr}") from None
    assert isinstance(document, dict)
    return document


def one_stderr_line(text: str) -> str:
    """stderr is exactly one `wa-export: ...` line, no traceback; returns it."""
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("wa-export: ") and "Traceback" not in text
    return lines[0]


def health_checks(result: CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The checks of a `wa-export health --json` result, by name."""
    return {check["name"]: check for check in parse_json(result)["checks"]}


def lines_with(stdout: str, *words: str) -> list[str]:
    return [line for line in stdout.splitlines() if all(word in line for word in words)]


def xlsx_files(export_dir: Path) -> list[Path]:
    return sorted(export_dir.rglob("*.xlsx")) if export_dir.exists() else []


def aged_file(path: Path, age_days: float, content: bytes = b"x" * 100) -> Path:
    """Write `content` at `path` (creating its folders), last modified `age_days` ago."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    moment = time.time() - age_days * 86400
    os.utime(path, (moment, moment))
    return path


def limit_file_size(limit: int) -> Callable[[], None]:
    """A `preexec_fn` under which the child's writes past `limit` bytes fail (EFBIG): a disk filling up."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes fail with EFBIG instead of killing the child
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def stop_with_sigterm(process: subprocess.Popen[str], bound: float) -> tuple[str, str, float]:
    """SIGTERM `process` and wait: (stdout, stderr, seconds it took to end); fails if it outlives `bound` seconds."""
    signalled = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        stdout, stderr = process.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"wa-export was still running {bound} s after SIGTERM") from None
    return stdout, stderr, time.monotonic() - signalled


# ----------------------------------------------------------------------------- MongoDB


def cursor_of(db: Any, workspace_id: Any) -> Any:
    """The workspace's scheduled position: the arrival key (_id) from which nothing is delivered yet."""
    document = db.export_state.find_one({"_id": str(workspace_id)})
    return None if document is None else document.get("cursor")


def cursor_moves(db: Any) -> list[dict[str, Any]]:
    """The `cursor_moved` events in system_logs, oldest first."""
    return list(db.system_logs.find({"event_type": "cursor_moved"}).sort("timestamp", 1))


class CommandLog(monitoring.CommandListener):
    """Every command a MongoClient sends (name, collection, body) and the number of documents each reply returned."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, str, dict[str, Any]]] = []
        self.returned: Counter[str] = Counter()  # documents read, per collection
        self._collection: dict[int, str] = {}

    @property
    def names(self) -> list[str]:
        return [name for name, _, _ in self.commands]

    def bodies(self, name: str, collection: str) -> list[dict[str, Any]]:
        """The `name` commands (find, getMore, ...) sent to `collection`."""
        return [body for sent, target, body in self.commands if sent == name and target == collection]

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        command = dict(event.command)
        collection = command.get(event.command_name)
        if event.command_name == "getMore":
            collection = command.get("collection")
        name = collection if isinstance(collection, str) else ""
        self._collection[event.request_id] = name
        self.commands.append((event.command_name, name, command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        reply_cursor = event.reply.get("cursor") if isinstance(event.reply, dict) else None
        if isinstance(reply_cursor, dict):
            batch = reply_cursor.get("firstBatch", reply_cursor.get("nextBatch", []))
            self.returned[self._collection.pop(event.request_id, "")] += len(batch)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        return None


# ----------------------------------------------------------------------------- secrets

# Passwords with characters a URI must encode, so a leak in any spelling is caught.
SMTP_SECRET = "Sm7p-S3cr3t-!@#"
MONGO_SECRET = "M0ng0-S3cr3t/"  # in a URI: M0ng0-S3cr3t%2F
WRONG_SECRETS = ("Wr0ng-Sm7p-P4ss!", "Wr0ng-M0ng0-P4ss/")


def secret_forms(*secrets: str) -> list[str]:
    """Each secret as is, percent-encoded (either case), form-encoded and as repr() shows it."""
    forms: set[str] = set()
    for secret in secrets:
        encoded = quote(secret, safe="")
        forms |= {secret, encoded, encoded.lower(), quote_plus(secret), repr(secret)[1:-1]}
    return sorted(forms)


SECRET_FORMS = secret_forms(SMTP_SECRET, MONGO_SECRET, *WRONG_SECRETS)


def assert_no_secret(where: str, *texts: str | bytes) -> None:
    """No spelling of SMTP_SECRET, MONGO_SECRET or WRONG_SECRETS in any of `texts`."""
    for text in texts:
        data = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
        for form in SECRET_FORMS:
            assert form not in data, f"{form!r} leaked into {where}"


class GatedSmtpServer(LocalSmtpServer):
    """A LocalSmtpServer that holds every DATA command until `parties` connections are open.

    A wa-export run opens its one SMTP connection on its first email and keeps
    the workspace's lease until that email is accepted. So with `parties`
    concurrent runs, no run can finish its first workspace before every run
    is exporting one: the runs provably overlap, whatever the machine's load.
    The wait runs on the server's event loop (asyncio), so other connections
    are served meanwhile. If the parties never all arrive (the runs did not
    overlap), the gate opens after `gate_timeout` seconds and sets
    `gate_timed_out`, which the test asserts on.
    """

    def __init__(self, *, parties: int, gate_timeout: float = 20.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parties = parties
        self.gate_timeout = gate_timeout
        self.gate_timed_out = False

    def _make_protocol(self) -> Any:
        protocol = super()._make_protocol()
        data_command = protocol._smtp_methods["DATA"]

        async def gated_data(arg: Any) -> Any:
            await self._wait_for_parties()
            return await data_command(arg)

        protocol._smtp_methods["DATA"] = gated_data
        return protocol

    async def _wait_for_parties(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.gate_timeout
        while self.connection_count < self.parties:
            if loop.time() >= deadline:
                self.gate_timed_out = True
                return
            await asyncio.sleep(0.02)


def runs_overlapped(documents: list[dict[str, Any]]) -> bool:
    """True if every run's [started_at, finished_at] (from `--json`) shares a common moment."""
    starts = [datetime.fromisoformat(document["started_at"]) for document in documents]
    ends = [datetime.fromisoformat(document["finished_at"]) for document in documents]
    return max(starts) < min(ends)


LEASE_HELD = "another wa-export run holds this workspace's lease"


def lease_skips(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The workspace results (from `--json`) a run skipped because another run held the lease."""
    return [
        result
        for document in documents
        for result in document["workspaces"]
        if result["outcome"] == "skipped" and result["reason"] == LEASE_HELD
    ]


def smtp_env(server: LocalSmtpServer) -> dict[str, str]:
    """The SMTP_* settings that point wa-export at `server` (for `make_env(**smtp_env(server))`)."""
    return {
        "SMTP_SERVER": server.host,
        "SMTP_PORT": str(server.port),
        "SMTP_USERNAME": server.username or "",
        "SMTP_PASSWORD": server.password or "",
        "SMTP_CA_FILE": str(server.ca_cert_path),
    }


def run_on_a_terminal(
    args: list[str], env: dict[str, str], cwd: str, timeout: float = 60, columns: int = 160
) -> tuple[int, str]:
    """Run the installed wa-export with stdout on a pseudo-terminal `columns` wide; (exit code, screen text)."""
    controller, terminal = os.openpty()
    process = subprocess.Popen(
        [str(cli_executable()), *args],
        env={**env, "COLUMNS": str(columns), "TERM": "xterm-256color"},
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if ready:
                try:
                    data = os.read(controller, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        return process.wait(timeout=10), b"".join(chunks).decode("utf-8", "replace")
    finally:
        if process.poll() is None:
            process.kill()
        os.close(controller)


class HookedSmtpServer(LocalSmtpServer):
    """Calls `on_message()` on the server thread when message number `hook_at` (1-based) arrives,
    *before* the 250 reply: the client is provably still inside that workspace's export when it fires."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_message: Any = None
        self.hook_at = 1
        self._fired = False

    def _record(self, captured: CapturedMessage) -> None:
        super()._record(captured)
        if not self._fired and self.on_message is not None and len(self.messages) >= self.hook_at:
            self._fired = True
            self.on_message()


class SlowDataSmtpServer(LocalSmtpServer):
    """A LocalSmtpServer that receives each message and then holds its 250 reply for `hold_seconds`.

    `data_started` is set when the first message has arrived and its reply is being held.
    The wait runs on the server's event loop, so other connections are served meanwhile.
    """

    def __init__(self, *, hold_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hold_seconds = hold_seconds
        self.data_started = threading.Event()

    def _make_protocol(self) -> Any:
        protocol = super()._make_protocol()
        receive = protocol._handle_hooks["DATA"]  # aiosmtpd's bound handle_DATA

        async def held(server: Any, session: Any, envelope: Any) -> Any:
            reply = await receive(server, session, envelope)
            self.data_started.set()
            await asyncio.sleep(self.hold_seconds)
            return reply

        protocol._handle_hooks["DATA"] = held
        return protocol


# The original service's export_logs fields, which its readers rely on (ours only add fields).
ORIGINAL_EXPORT_LOG_FIELDS = (
    "workspace_id",
    "export_type",
    "export_timestamp",
    "message_count",
    "file_path",
    "email_sent_to",
    "status",
    "error_message",
    "created_at",
    "updated_at",
)


def run_export(settings: Settings, store: Store, request: ExportRequest) -> RunResult:
    """One run in this process on a store the test opened, as `wa-export export` runs it."""
    return ExportRun(settings, store, request).execute()


def setting_variables() -> list[str]:
    """Every setting's variable, in the order `config` lists them."""
    return [rule.variable for rule in RULES]


def run_cli_processes_at_once(commands: list[list[str]], env: dict[str, str], cwd: Path) -> list[dict[str, Any]]:
    """Start every `wa-export COMMAND --json` together (hosts or overlapping cron runs); each must exit 0."""
    procs = [
        subprocess.Popen(
            [str(cli_executable()), *command],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        for command in commands
    ]
    documents = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stdout + stderr
        documents.append(parse_json(CompletedProcess([], 0, stdout, stderr)))
    return documents


def start_demo(args: list[str], cwd: Path, path: str | None = None) -> subprocess.Popen[str]:
    """`wa-export demo ARGS` as its own process, with only PATH (default: this one's) and HOME=`cwd`."""
    return subprocess.Popen(
        [str(cli_executable()), "demo", *args],
        cwd=cwd,
        env={"PATH": os.environ.get("PATH", "") if path is None else path, "HOME": str(cwd)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def terminal_output(width: int) -> tuple[Any, io.StringIO]:
    """An interactive Output whose rich Console draws into a string at `width` columns."""
    from rich.console import Console

    from wa_export.cli.render import Output

    output = Output(json_output=False)
    screen = io.StringIO()
    output.console = Console(file=screen, width=width, force_terminal=True, color_system=None, soft_wrap=True)
    output.interactive = True
    return output, screen


@contextmanager
def commands_of(monkeypatch: Any, module: Any, settings: Settings) -> Iterator[CommandLog]:
    """Every MongoDB command `module` sends while the block runs: its `open_store` gets a listened-to client."""
    log = CommandLog()
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True, event_listeners=[log])

    @contextmanager
    def observed_store(_settings: Any) -> Iterator[Store]:
        yield Store(client, settings)

    monkeypatch.setattr(module, "open_store", observed_store)
    try:
        yield log
    finally:
        client.close()
