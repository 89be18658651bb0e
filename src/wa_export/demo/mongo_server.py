"""The demo's MongoDB: mongoeco's wire-protocol server in a child process on a free loopback port.

The child (`python -m wa_export.demo.mongo_server mongo --port N`) never outlives
its parent: it exits when its stdin pipe closes. Its only output is the
`READY <port>` line, which is how the parent learns it is serving. mongoeco is
imported in the child only. Test-only switches (authentication, SIGKILL,
restart) live in tests/servers.py, which subclasses this server.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass


from wa_export.demo.loopback import LOOPBACK, LocalServerError, free_port


def _log_tail(path: Path | None, limit: int = 4000) -> str:
    if path is None:
        return ""
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-limit:].decode("utf-8", errors="replace").strip()


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Last-resort cleanup (garbage collection / interpreter exit): no orphan servers."""
    if proc.poll() is None:
        proc.kill()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover - kernel is stuck
            pass
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # pragma: no cover
                pass


class LocalMongoServer:
    """mongoeco's MongoDB wire-protocol server in a subprocess on a free loopback port.

    A separate process (not a thread) so tests can SIGKILL it mid-run and
    `restart()` it on the same port. With `data_path` the data lives in a
    SQLite file and survives restarts; without it, everything is in memory.
    Subclasses change the child through `child_command()`, `child_env()` and
    `ping_uri()` (the test suite's authenticating server does).
    """

    def __init__(
        self,
        data_path: Path | None = None,
        port: int = 0,
        startup_timeout: float = 30.0,
    ) -> None:
        self.data_path = Path(data_path) if data_path is not None else None
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self._tmpdir: Path | None = None
        self.log_path: Path | None = None

    # -- properties

    @property
    def port(self) -> int:
        return self._port

    @property
    def uri(self) -> str:
        if not self._port:
            raise LocalServerError("LocalMongoServer has no port yet; call start() first")
        return f"mongodb://{LOOPBACK}:{self._port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc.pid
        return None

    @property
    def running(self) -> bool:
        return self.pid is not None

    # -- lifecycle

    def start(self) -> LocalMongoServer:
        if self.running:
            return self
        if self._tmpdir is None:
            self._tmpdir = Path(tempfile.mkdtemp(prefix="wa-export-mongo-"))
            self.log_path = self._tmpdir / "server.log"
            weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        # A port we picked ourselves may be taken by someone else before the
        # child binds it; retry with a fresh one. A port that is already ours
        # (explicit, or kept for restart) is never silently changed.
        attempts = 1 if self._port else 3
        for attempt in range(attempts):
            if not self._port or attempt:
                self._port = free_port()
            try:
                self._spawn_and_wait()
                return self
            except LocalServerError:
                if attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def child_command(self) -> list[str]:
        """The server process: `python -m wa_export.demo.mongo_server mongo --port N [--data PATH]`."""
        cmd = [sys.executable, "-m", "wa_export.demo.mongo_server", "mongo", "--port", str(self._port)]
        if self.data_path is not None:
            cmd += ["--data", str(self.data_path)]
        return cmd

    def child_env(self) -> dict[str, str]:
        return dict(os.environ)

    def ping_uri(self) -> str:
        """The URI the readiness check pings."""
        return self.uri

    def _spawn_and_wait(self) -> None:
        assert self.log_path is not None
        cmd = self.child_command()
        child_env = self.child_env()
        with open(self.log_path, "ab") as log:
            # stdin is a pipe only we hold: when this process dies, however it
            # dies, the child reads EOF and exits (see _watch_parent).
            proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, close_fds=True, env=child_env
            )
        self._proc = proc
        self._finalizer = weakref.finalize(self, _reap, proc)
        deadline = time.monotonic() + self.startup_timeout
        try:
            line = self._read_ready_line(proc, deadline)
            if line.split() != ["READY", str(self._port)]:
                raise LocalServerError(
                    f"mongo server did not start (said {line!r}): {_log_tail(self.log_path)}"
                )
            self._wait_for_ping(proc, deadline)
        except BaseException:
            self._terminate(graceful=False)
            raise

    def _read_ready_line(self, proc: subprocess.Popen[bytes], deadline: float) -> str:
        # readline() has no timeout, so read on a helper thread; it finishes by
        # itself once the child prints or exits (we kill it on timeout).
        result: queue.Queue[bytes] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout
        reader = threading.Thread(
            target=lambda: result.put(stdout.readline()), name="mongo-ready", daemon=True
        )
        reader.start()
        try:
            raw = result.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            reader.join(5)
            raise LocalServerError(
                f"mongo server did not report READY within {self.startup_timeout}s: "
                f"{_log_tail(self.log_path)}"
            ) from None
        reader.join()
        return raw.decode("utf-8", errors="replace").strip()

    def _wait_for_ping(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        last: Exception | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LocalServerError(
                    f"mongo server exited with {proc.returncode}: {_log_tail(self.log_path)}"
                )
            uri = self.ping_uri()
            client: MongoClient[dict[str, Any]] = MongoClient(
                uri, serverSelectionTimeoutMS=2000, connectTimeoutMS=2000
            )
            try:
                client.admin.command("ping")
                return
            except PyMongoError as exc:
                last = exc
                time.sleep(0.1)
            finally:
                client.close()
        raise LocalServerError(f"mongo server does not answer ping: {last}: {_log_tail(self.log_path)}")

    def _terminate(self, *, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if graceful:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
        if self._finalizer is not None:
            self._finalizer()  # waits, closes the pipes, and detaches itself
            self._finalizer = None

    def stop(self) -> None:
        """Terminate gracefully (SIGTERM), SIGKILL after 5 s; idempotent."""
        self._terminate(graceful=True)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
            self.log_path = None

    def __enter__(self) -> LocalMongoServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# ------------------------------------------------------------ child process entry


def _watch_parent(on_orphaned: Any) -> None:
    """Call `on_orphaned` when the parent goes away (our stdin pipe hits EOF)."""
    # os.read on the raw fd, not sys.stdin: a daemon thread blocked inside a
    # buffered reader aborts interpreter shutdown ("could not acquire lock").
    try:
        while os.read(0, 4096):
            pass
    except (OSError, ValueError):
        pass
    on_orphaned()


async def serve_mongo(port: int, data: Path | None, auth_users: Sequence[Any] = ()) -> None:
    """Serve mongoeco's wire protocol on 127.0.0.1:`port` until SIGTERM/SIGINT or the parent's exit.

    `auth_users` (mongoeco `WireAuthUser`s) make every command require authentication;
    only the test suite passes any.
    """
    import asyncio
    import signal

    from mongoeco.wire import AsyncMongoEcoProxyServer

    engine: Any = None
    if data is not None:
        from mongoeco.engines.sqlite import SQLiteEngine

        if data.is_dir():
            data = data / "mongoeco.sqlite3"
        data.parent.mkdir(parents=True, exist_ok=True)
        engine = SQLiteEngine(str(data))

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def orphaned() -> None:
        try:
            loop.call_soon_threadsafe(stop.set)
        except RuntimeError:  # loop already closed: we are exiting anyway
            return
        # If a clean shutdown wedges, still never outlive the parent.
        time.sleep(10)
        os._exit(1)

    threading.Thread(target=_watch_parent, args=(orphaned,), name="parent-watch", daemon=True).start()

    server = AsyncMongoEcoProxyServer(host=LOOPBACK, port=port, engine=engine, auth_users=auth_users)
    address = await server.start()
    try:
        print(f"READY {address.port}", flush=True)
        await stop.wait()
    finally:
        await server.close()


def _main(argv: list[str] | None = None) -> int:
    import argparse
    import asyncio

    parser = argparse.ArgumentParser(prog="python -m wa_export.demo.mongo_server")
    commands = parser.add_subparsers(dest="command", required=True)
    mongo = commands.add_parser("mongo", help="serve mongoeco's wire protocol on 127.0.0.1")
    mongo.add_argument("--port", type=int, required=True)
    mongo.add_argument("--data", type=Path, default=None, help="SQLite file (persistent)")
    args = parser.parse_args(argv)
    if args.command == "mongo":
        asyncio.run(serve_mongo(args.port, args.data))
    return 0


if __name__ == "__main__":
    sys.exit(_main())

