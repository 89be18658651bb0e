"""Local, loopback-only servers for the test suite and `wa-export demo` (SPEC §8, §9).

* `LocalMongoServer` runs mongoeco's MongoDB wire-protocol server in a child
  process (so a test can SIGKILL it mid-run and restart it on the same port).
* `LocalSmtpServer` runs aiosmtpd in a background thread with real TLS
  (certificates from trustme) and AUTH, capturing every delivered message.

Everything binds 127.0.0.1 only. Library code never prints; the only output is
the child's `READY <port>` line, which is how the parent learns it is serving.
The optional dependencies (aiosmtpd, trustme, mongoeco) are imported lazily so
that importing this module never requires the `demo` extra.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import os
import queue
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover - typing only
    import trustme

LOOPBACK = "127.0.0.1"
# How LocalMongoServer hands user passwords to its child (not argv: `ps` shows argv).
_MONGO_USERS_ENV = "WA_EXPORT_LOCAL_MONGO_USERS"

__all__ = [
    "CapturedMessage",
    "LocalMongoServer",
    "LocalServerError",
    "LocalSmtpServer",
    "free_port",
    "write_eml",
]


class LocalServerError(Exception):
    """A local server could not be started (or stopped) as asked."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    aiosmtpd's Controller and the mongo child both need an explicit port up
    front, so we let the kernel pick one and release it immediately.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


_eml_lock = threading.Lock()


def write_eml(directory: Path, data: bytes) -> Path:
    """Write `data` as the next `NNN.eml` in `directory`, readable by the owner only.

    Mails contain customer conversations, hence 0600 from the moment the file
    exists (O_CREAT with a mode, never chmod afterwards). O_EXCL makes the
    sequential name safe even if two writers race.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _eml_lock:
        number = len(list(directory.glob("*.eml"))) + 1
        while True:
            path = directory / f"{number:03d}.eml"
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                number += 1
                continue
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            return path


# --------------------------------------------------------------------------- SMTP


@dataclass
class CapturedMessage:
    """One message as the SMTP server received it."""

    mail_from: str
    rcpt_tos: list[str]
    data: bytes  # raw message bytes, CRLF line endings, dot-unstuffed
    peer: Any = field(default=None, repr=False)

    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


TlsMode = Literal["starttls", "ssl", "none"]


class LocalSmtpServer:
    """aiosmtpd on 127.0.0.1 in a background thread, capturing what arrives.

    `tls="starttls"` advertises STARTTLS and only offers AUTH after it;
    `tls="ssl"` speaks TLS from the first byte; `tls="none"` is plain text.
    With a username, AUTH (PLAIN, LOGIN) is required before MAIL FROM.
    Passing a `certificate_authority` other than the one a client trusts is
    how tests simulate "certificate from an unknown CA".
    """

    host: str = LOOPBACK

    def __init__(
        self,
        *,
        port: int = 0,
        tls: TlsMode = "starttls",
        username: str | None = "wa-export",
        password: str | None = "s3cret-pass",
        certificate_authority: trustme.CA | None = None,
        refuse_recipients: Collection[str] = (),
        drop_connection_during_data: bool = False,
        eml_dir: Path | None = None,
        ready_timeout: float = 10.0,
    ) -> None:
        if tls not in ("starttls", "ssl", "none"):
            raise ValueError(f"tls must be 'starttls', 'ssl' or 'none', not {tls!r}")
        import trustme  # lazy: optional `demo` dependency

        self.tls: TlsMode = tls
        self.username = username
        self.password = password
        self.certificate_authority: trustme.CA = certificate_authority or trustme.CA()
        self.refuse_recipients = frozenset(r.lower() for r in refuse_recipients)
        self.drop_connection_during_data = drop_connection_during_data
        self.eml_dir = Path(eml_dir) if eml_dir is not None else None
        self.ready_timeout = ready_timeout
        self._requested_port = port
        self._port = port
        self._controller: Any = None
        self._tmpdir: Path | None = None
        self._cond = threading.Condition()
        self.messages: list[CapturedMessage] = []
        self.connection_count = 0
        self.auth_failures = 0
        self.auth_successes = 0
        # Live protocol objects, so stop() can abort open client connections.
        self._protocols: weakref.WeakSet[Any] = weakref.WeakSet()

    # -- certificates

    @property
    def ca_cert_path(self) -> Path:
        """PEM of the CA that signed the server certificate (usable as SMTP_CA_FILE)."""
        tmpdir = self._ensure_tmpdir()
        path = tmpdir / "ca.pem"
        if not path.exists():
            self.certificate_authority.cert_pem.write_to_path(str(path))
        return path

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert_path))

    def _ensure_tmpdir(self) -> Path:
        if self._tmpdir is None or not self._tmpdir.exists():
            self._tmpdir = Path(tempfile.mkdtemp(prefix="wa-export-smtp-"))
            # Also removed if the owner forgets stop() (GC or interpreter exit).
            weakref.finalize(self, shutil.rmtree, self._tmpdir, True)
        return self._tmpdir

    def _server_ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.certificate_authority.issue_cert(LOOPBACK, "localhost").configure_cert(ctx)
        return ctx

    # -- lifecycle

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> LocalSmtpServer:
        if self._controller is not None:
            return self
        from aiosmtpd.controller import Controller

        owner = self

        class _Controller(Controller):  # type: ignore[misc]
            def factory(self) -> Any:
                # One SMTP protocol object per accepted TCP connection: the
                # natural place to count connections.
                return owner._make_protocol()

        ssl_ctx = self._server_ssl_context() if self.tls != "none" else None
        self._tls_ctx = ssl_ctx
        self.ca_cert_path  # noqa: B018 - materialise the PEM before anyone asks
        last_error: Exception | None = None
        # An explicit port is honoured; port 0 means "pick one", retried in
        # case another process grabbed it between free_port() and bind().
        for _attempt in range(1 if self._requested_port else 5):
            port = self._requested_port or free_port()
            if self._requested_port:
                # aiosmtpd only reports a failed bind after ready_timeout;
                # probe first so a taken port fails fast.
                _probe_bind(port)
            controller = _Controller(
                _Handler(self),
                hostname=LOOPBACK,
                port=port,
                ready_timeout=self.ready_timeout,
                ssl_context=ssl_ctx if self.tls == "ssl" else None,
            )
            try:
                controller.start()
            except OSError as exc:
                last_error = exc
                _discard_controller(controller)
                continue
            except Exception as exc:
                _discard_controller(controller)
                raise LocalServerError(f"SMTP server failed to start: {exc}") from exc
            self._controller = controller
            self._port = port
            break
        else:
            raise LocalServerError(f"SMTP server could not bind a port: {last_error}")
        # Controller.start() opened one connection itself to wake the server up;
        # it is not a client connection.
        with self._cond:
            self.connection_count = 0
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            # Abort live client connections first: Controller.stop() waits for
            # Server.wait_closed(), which (Python 3.12+) waits for every
            # connection, and a graceful TLS shutdown of an idle client can
            # take ssl_shutdown_timeout (30 s).
            done = threading.Event()
            try:
                controller.loop.call_soon_threadsafe(self._abort_connections, done)
                done.wait(5)
            except RuntimeError:  # loop already gone: nothing left to abort
                pass
            _discard_controller(controller)
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> LocalSmtpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- captured mail

    def wait_for_messages(self, count: int, timeout: float = 10) -> list[CapturedMessage]:
        """Block until at least `count` messages arrived; TimeoutError otherwise."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.messages) >= count, timeout):
                raise TimeoutError(
                    f"expected {count} message(s) within {timeout}s, got {len(self.messages)}"
                )
            return list(self.messages)

    def _record(self, captured: CapturedMessage) -> None:
        if self.eml_dir is not None:
            write_eml(self.eml_dir, captured.data)
        with self._cond:
            self.messages.append(captured)
            self._cond.notify_all()

    # -- aiosmtpd plumbing (runs on the server thread)

    def _abort_connections(self, done: threading.Event) -> None:
        try:
            for protocol in list(self._protocols):
                for transport in (protocol.transport, protocol._original_transport):
                    if transport is not None and not transport.is_closing():
                        transport.abort()
        finally:
            done.set()

    def _make_protocol(self) -> Any:
        SMTP = _quiet_smtp_class()
        with self._cond:
            self.connection_count += 1
        require_auth = self.username is not None
        kwargs: dict[str, Any] = {
            # An explicit hostname also avoids socket.getfqdn(), i.e. DNS.
            "hostname": "localhost",
            "enable_SMTPUTF8": True,
            "authenticator": self._authenticate,
        }
        if self.tls == "starttls":
            kwargs.update(
                tls_context=self._tls_ctx,
                require_starttls=True,
                auth_required=require_auth,
                auth_require_tls=True,
            )
            smtp = SMTP(_Handler(self), **kwargs)
        else:
            # Implicit TLS is already encrypted but aiosmtpd only recognises
            # STARTTLS as "TLS", and plain mode is a test-only convenience:
            # turn the TLS-before-AUTH check off and set auth_required
            # afterwards, skipping aiosmtpd's "AUTH without TLS" warning.
            kwargs.update(auth_required=False, auth_require_tls=False)
            smtp = SMTP(_Handler(self), **kwargs)
            smtp._auth_required = require_auth
        self._protocols.add(smtp)
        return smtp

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (
            self.username is not None
            and isinstance(auth_data, LoginPassword)
            and auth_data.login == self.username.encode()
            and self.password is not None
            and auth_data.password == self.password.encode()
        )
        with self._cond:
            if ok:
                self.auth_successes += 1
            else:
                self.auth_failures += 1
        return AuthResult(success=ok, handled=False)


def _probe_bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option asyncio's create_server uses, so TIME_WAIT is no obstacle.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError as exc:
            raise LocalServerError(f"cannot bind {LOOPBACK}:{port}: {exc.strerror}") from exc


def _discard_controller(controller: Any) -> None:
    """Stop a Controller whether or not it started; always close its loop.

    A Controller whose bind failed never closes its own event loop, which
    would surface later as an "unclosed event loop" ResourceWarning.
    """
    controller.stop(no_assert=True)
    if not controller.loop.is_closed():
        controller.loop.close()


_QUIET_SMTP: Any = None


def _quiet_smtp_class() -> Any:
    """aiosmtpd's SMTP whose sessions do not log a deprecation warning on every AUTH.

    smtp_AUTH itself assigns the deprecated `Session.login_data`, whose setter
    logs a warning; with no logging configured that lands on stderr of the
    demo and every test. Nothing here reads login_data.
    """
    global _QUIET_SMTP
    if _QUIET_SMTP is None:
        from aiosmtpd.smtp import SMTP, Session

        class _QuietSession(Session):  # type: ignore[misc]
            login_data = None  # plain attribute shadows the logging property

        class _QuietSMTP(SMTP):  # type: ignore[misc]
            def _create_session(self) -> Session:
                return _QuietSession(self.loop)

        _QUIET_SMTP = _QuietSMTP
    return _QUIET_SMTP


class _Handler:
    """aiosmtpd event handler: refuse listed recipients, capture DATA, or drop it."""

    def __init__(self, owner: LocalSmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in self.owner.refuse_recipients:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import asyncio

        if self.owner.drop_connection_during_data:
            # The whole message arrived but the final 250 never will: the
            # client sees the connection vanish. Abort (not close) so no TLS
            # close_notify is sent, then wait to be cancelled by
            # connection_lost, which is aiosmtpd's normal disconnect path.
            server.transport.abort()
            await asyncio.Event().wait()
        data = envelope.original_content or b""
        self.owner._record(
            CapturedMessage(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                data=bytes(data),
                peer=session.peer,
            )
        )
        return "250 2.0.0 OK: queued"


# -------------------------------------------------------------------------- MongoDB


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
    With `users` ((name, password) pairs, authSource `admin`, SCRAM-SHA-256)
    every command needs authentication; `uri_for(name, password)` builds a
    URI pymongo logs in with. Passwords reach the child through its
    environment, never its argv (visible in `ps`).
    """

    def __init__(
        self,
        data_path: Path | None = None,
        port: int = 0,
        startup_timeout: float = 30.0,
        users: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.data_path = Path(data_path) if data_path is not None else None
        self.users: tuple[tuple[str, str], ...] = tuple((str(name), str(pw)) for name, pw in users)
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None
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

    def uri_for(self, username: str, password: str, database: str = "") -> str:
        """A URI that authenticates as `username` (mongoeco speaks SCRAM-SHA-256, not SHA-1)."""
        if not self._port:
            raise LocalServerError("LocalMongoServer has no port yet; call start() first")
        from urllib.parse import quote

        return (
            f"mongodb://{quote(username, safe='')}:{quote(password, safe='')}@{LOOPBACK}:{self._port}/{database}"
            "?directConnection=true&authSource=admin&authMechanism=SCRAM-SHA-256"
        )

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

    def _spawn_and_wait(self) -> None:
        assert self.log_path is not None
        cmd = [sys.executable, "-m", "wa_export.demo.servers", "mongo", "--port", str(self._port)]
        if self.data_path is not None:
            cmd += ["--data", str(self.data_path)]
        child_env = {key: value for key, value in os.environ.items() if key != _MONGO_USERS_ENV}
        if self.users:
            cmd += ["--users-from-env"]
            child_env[_MONGO_USERS_ENV] = json.dumps([list(user) for user in self.users])
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
            uri = self.uri_for(*self.users[0]) if self.users else self.uri
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

    def kill(self) -> None:
        """SIGKILL the server (fault injection); `restart()` brings it back on the same port."""
        self._terminate(graceful=False)

    def restart(self) -> None:
        """Stop the server if it runs and start it again on the same port."""
        self._terminate(graceful=True)
        self.start()

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


async def _serve_mongo(port: int, data: Path | None, users: Sequence[tuple[str, str]] = ()) -> None:
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

    auth_users: tuple[Any, ...] = ()
    if users:
        from mongoeco.wire.auth import WireAuthUser

        # mongoeco's SCRAM-SHA-1 lacks MongoDB's MD5 password digest, so pymongo
        # cannot use it: offer SCRAM-SHA-256 only (see LocalMongoServer.uri_for).
        auth_users = tuple(
            WireAuthUser(username=name, password=password, source="admin", mechanisms=("SCRAM-SHA-256",))
            for name, password in users
        )
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

    parser = argparse.ArgumentParser(prog="python -m wa_export.demo.servers")
    commands = parser.add_subparsers(dest="command", required=True)
    mongo = commands.add_parser("mongo", help="serve mongoeco's wire protocol on 127.0.0.1")
    mongo.add_argument("--port", type=int, required=True)
    mongo.add_argument("--data", type=Path, default=None, help="SQLite file (persistent)")
    mongo.add_argument(
        "--users-from-env", action="store_true",
        help=f"require authentication: JSON [[name, password], ...] in ${_MONGO_USERS_ENV}",
    )
    args = parser.parse_args(argv)
    if args.command == "mongo":
        users: list[tuple[str, str]] = []
        if args.users_from_env:
            users = [(str(name), str(pw)) for name, pw in json.loads(os.environ.pop(_MONGO_USERS_ENV, "[]"))]
        asyncio.run(_serve_mongo(args.port, args.data, users))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
