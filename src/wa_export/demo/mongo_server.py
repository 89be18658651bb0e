"""The demo's MongoDB: mongoeco's wire-protocol server in a child process on a free loopback port. The child
(`python -m wa_export.demo.mongo_server --port N`) prints only `READY <port>` once it serves, and exits when its
stdin pipe closes, so it never outlives its parent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from typing import Any

from wa_export.demo.smtp_server import LOOPBACK, LocalServerError, free_port


def _reap(proc: subprocess.Popen[bytes]) -> None:
    """Kill, wait, close the pipes; also at garbage collection or interpreter exit, so no server is orphaned."""
    with proc:  # waits and closes the pipes
        proc.kill()  # a no-op once it exited


class LocalMongoServer:
    """mongoeco's server in a subprocess, its data in memory. Tests subclass it through `port`, `startup_timeout`,
    `child_command()` and `child_env()`."""

    port = 0
    startup_timeout = 30.0

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{LOOPBACK}:{self.port}/?directConnection=true"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> LocalMongoServer:
        # A port we pick may be taken before the child binds it: retry with a fresh one. Our own port never changes.
        ours = bool(self.port)
        for attempt in range(3 if self.pid is None else 0):
            self.port = self.port if ours else free_port()
            try:
                self._spawn()
                break
            except LocalServerError:
                if ours or attempt == 2:
                    raise
        return self

    def child_command(self) -> list[str]:
        return [sys.executable, "-m", "wa_export.demo.mongo_server", "--port", str(self.port)]

    def child_env(self) -> dict[str, str]:
        return dict(os.environ)

    def _spawn(self) -> None:
        with tempfile.TemporaryFile() as log:
            # stdin is a pipe only we hold: however this process dies, the child reads EOF and exits.
            proc = subprocess.Popen(
                self.child_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=self.child_env()
            )
            self._proc, self._finalizer = proc, weakref.finalize(self, _reap, proc)
            assert proc.stdout is not None
            said = f"nothing within {self.startup_timeout}s"
            if select.select([proc.stdout], [], [], self.startup_timeout)[0]:
                line = proc.stdout.readline().decode(errors="replace").strip()
                if line == f"READY {self.port}":
                    return
                said = repr(line)
            self._terminate(graceful=False)
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace").strip()
            raise LocalServerError(f"mongo server did not start (said {said}): {tail}")

    def _terminate(self, *, graceful: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and graceful:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if self._finalizer is not None:
            self._finalizer()  # kills what still runs, waits, closes the pipes

    def stop(self) -> None:
        """Terminate gracefully (SIGTERM), SIGKILL after 5 s; idempotent."""
        self._terminate(graceful=True)

    def __enter__(self) -> LocalMongoServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


async def serve_mongo(port: int, **server_options: Any) -> None:
    """The child: serve on 127.0.0.1:`port` until SIGTERM/SIGINT or the parent's exit (`server_options`:
    AsyncMongoEcoProxyServer's, e.g. the tests' engine and auth_users)."""
    from mongoeco.wire import AsyncMongoEcoProxyServer

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def parent_gone() -> None:  # stdin readable: EOF once the parent's end of the pipe closed
        with contextlib.suppress(OSError):
            if os.read(0, 4096):
                return
        loop.remove_reader(0)
        stop.set()
        # If a clean shutdown wedges, still never outlive the parent.
        wedged = threading.Timer(10, os._exit, (1,))
        wedged.daemon = True
        wedged.start()

    loop.add_reader(0, parent_gone)
    async with AsyncMongoEcoProxyServer(host=LOOPBACK, port=port, **server_options) as server:
        print(f"READY {server.address.port}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m wa_export.demo.mongo_server")
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve_mongo(parser.parse_args().port))
