"""The demo's SMTP server: aiosmtpd on 127.0.0.1 in a background thread, real TLS and AUTH.

Certificates come from trustme; every delivered message is captured (and written
as an .eml file when asked). aiosmtpd and trustme are imported lazily, so
importing this module never requires the `demo` extra. Test-only fault switches
live in tests/servers.py, which subclasses this server.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import shutil
import socket
import ssl
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # pragma: no cover - typing only
    import trustme


from wa_export.demo.loopback import LOOPBACK, LocalServerError, free_port, write_eml


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

        class _Controller(Controller):
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
                self.make_handler(),
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

    def make_handler(self) -> Any:
        """The aiosmtpd handler of each connection (tests substitute faulty ones)."""
        return CapturingHandler(self)

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
            smtp = SMTP(self.make_handler(), **kwargs)
        else:
            # Implicit TLS is already encrypted but aiosmtpd only recognises
            # STARTTLS as "TLS", and plain mode is a test-only convenience:
            # turn the TLS-before-AUTH check off and set auth_required
            # afterwards, skipping aiosmtpd's "AUTH without TLS" warning.
            kwargs.update(auth_required=False, auth_require_tls=False)
            smtp = SMTP(self.make_handler(), **kwargs)
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

        class _QuietSession(Session):
            login_data = None  # plain attribute shadows the logging property

        class _QuietSMTP(SMTP):
            def _create_session(self) -> Session:
                return _QuietSession(self.loop)

        _QUIET_SMTP = _QuietSMTP
    return _QUIET_SMTP


class CapturingHandler:
    """aiosmtpd event handler: accept every recipient and capture each message."""

    def __init__(self, owner: LocalSmtpServer) -> None:
        self.owner = owner

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
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


