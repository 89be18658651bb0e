"""The demo's loopback servers. MongoDB: mongoeco in a child process (`python -m wa_export.demo.servers --port N`)
that prints only `READY <port>` once it serves and exits when its stdin pipe closes, so it never outlives its parent.
SMTP: aiosmtpd in a background thread with real TLS (a trustme CA) and AUTH; the only product code using aiosmtpd's
internals (Controller._create_server, server.abort_clients; pinned in pyproject.toml)."""

from __future__ import annotations

import asyncio
import logging
import os
import select
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import weakref
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


class LocalServerError(Exception):
    """A local server could not be started as asked."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the mongo child needs one on its command line)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def write_eml(directory: Path, data: bytes) -> Path:
    """`data` as the next free `NNN.eml` in `directory`, 0600 from the start (mails hold customer conversations)."""
    directory.mkdir(parents=True, exist_ok=True)
    number = len(list(directory.glob("*.eml")))
    while True:
        number += 1
        path = directory / f"{number:03d}.eml"
        with suppress(FileExistsError), open(path, "xb", opener=partial(os.open, mode=0o600)) as file:
            file.write(data)
            return path


@dataclass
class CapturedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # raw message bytes, CRLF line endings, dot-unstuffed


class LocalSmtpServer:
    """Captures what arrives (also as .eml files in `eml_dir`); STARTTLS with a certificate of its own CA (its PEM at
    `ca_cert_path` once started), then AUTH (PLAIN, LOGIN) before MAIL FROM. Tests subclass it (tests/servers.py)."""

    host: str = LOOPBACK
    port: int = 0
    listener_tls = False  # TLS from the first byte instead of STARTTLS (tests)

    def __init__(
        self, *, username: str = "wa-export", password: str = "s3cret-pass", eml_dir: Path | None = None
    ) -> None:
        import trustme

        self.username, self.password, self.eml_dir = username, password, eml_dir
        self.certificate_authority = trustme.CA()
        self._controller: Any = None
        self._tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._tmpdir = tempfile.TemporaryDirectory(prefix="wa-export-smtp-")  # removed with this object
        self.ca_cert_path = Path(self._tmpdir.name) / "ca.pem"
        self._cond = threading.Condition()
        self.messages: list[CapturedMessage] = []

    def start(self) -> LocalSmtpServer:
        from aiosmtpd.controller import Controller

        # aiosmtpd logs a deprecation warning (to stderr) on every successful AUTH, from its own code.
        logging.getLogger("mail.log").setLevel(logging.ERROR)
        self.certificate_authority.cert_pem.write_to_path(str(self.ca_cert_path))
        self.certificate_authority.issue_cert(LOOPBACK, "localhost").configure_cert(self._tls_context)
        # Bound here, not by the Controller: a taken port fails at once, not after its ready_timeout (10 s).
        try:
            listener = socket.create_server((LOOPBACK, self.port))
        except OSError as exc:
            raise LocalServerError(f"cannot bind {LOOPBACK}:{self.port}: {exc.strerror}") from exc
        owner = self

        class _Controller(Controller):
            def factory(self) -> Any:
                return owner._make_protocol()

            def _create_server(self) -> Any:  # aiosmtpd's documented override point for the listener
                return self.loop.create_server(self._factory_invoker, sock=listener, ssl=self.ssl_context)

        ssl_context = self._tls_context if self.listener_tls else None
        controller = _Controller(None, LOOPBACK, listener.getsockname()[1], ready_timeout=10.0, ssl_context=ssl_context)
        try:
            controller.start()
        except Exception as exc:
            controller.stop(no_assert=True)
            listener.close()
            raise LocalServerError(f"SMTP server failed to start: {exc}") from exc
        self._controller, self.port = controller, controller.port
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            # Controller.stop() waits for every connection, and an idle TLS client's graceful shutdown can take 30 s.
            controller.loop.call_soon_threadsafe(controller.server.abort_clients)
            controller.stop()

    def __enter__(self) -> LocalSmtpServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def wait_for_messages(self, count: int, timeout: float = 10) -> list[CapturedMessage]:
        """Block until at least `count` messages arrived; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(f"expected {count} message(s) within {timeout}s, got {len(self.messages)}")
            return list(self.messages)

    def _record(self, captured: CapturedMessage) -> None:
        if self.eml_dir is not None:
            write_eml(self.eml_dir, captured.data)
        with self._cond:
            self.messages.append(captured)
            self._cond.notify_all()

    def make_handler(self) -> Any:
        return CapturingHandler(self)

    def _make_protocol(self) -> Any:
        from aiosmtpd.smtp import SMTP

        # An explicit hostname: no socket.getfqdn() (DNS).
        options: Any = dict(hostname="localhost", enable_SMTPUTF8=True, require_starttls=True, auth_required=True)
        return SMTP(self.make_handler(), authenticator=self._authenticate, tls_context=self._tls_context, **options)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        login = (self.username.encode(), self.password.encode())
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == login
        return AuthResult(success=ok, handled=False)


class CapturingHandler:
    """aiosmtpd's event handler (its `handle_DATA` hook): accept every recipient and capture each message."""

    def __init__(self, owner: LocalSmtpServer) -> None:
        self.owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        data = bytes(envelope.original_content or b"")
        self.owner._record(CapturedMessage(envelope.mail_from or "", list(envelope.rcpt_tos), data))
        return "250 2.0.0 OK: queued"


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
        return [sys.executable, "-m", "wa_export.demo.servers", "--port", str(self.port)]

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
            self.stop(graceful=False)
            log.seek(0)
            tail = log.read()[-4000:].decode(errors="replace").strip()
            raise LocalServerError(f"mongo server did not start (said {said}): {tail}")

    def stop(self, graceful: bool = True) -> None:
        """SIGTERM, then SIGKILL after 5 s (at once unless `graceful`); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and graceful:
            proc.terminate()
            with suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        if self._finalizer is not None:
            self._finalizer()  # kills what still runs, waits, closes the pipes

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
        with suppress(OSError):
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


if __name__ == "__main__":  # the child, as LocalMongoServer.child_command() starts it
    asyncio.run(serve_mongo(int(sys.argv[sys.argv.index("--port") + 1])))
