"""A hand-written SMTP server on 127.0.0.1 that misbehaves at one chosen point.

aiosmtpd always answers properly; the failures that hang a client are a server
that keeps a reply going forever (``250-`` continuation lines every second),
one that goes silent, and one that hangs up. `MisbehavingSmtpServer` speaks
SMTP in plain text, with STARTTLS or with implicit TLS (a trustme CA; `env()`
gives the matching SMTP_* settings), with optional AUTH PLAIN/LOGIN, and
does one of those at the greeting, after EHLO, after AUTH, at the DATA command
(before its 354, so no content goes out) or after the DATA payload; or it says
yes to STARTTLS and then never takes part in the TLS handshake. Its reply to a
received payload can be any line (`data_reply`: a rejection, an odd code), and
`replies` answers chosen commands with a line of their own (a refused MAIL FROM,
a DATA refused without 354). It can also echo the client's AUTH blobs (base64, with or without
padding) in its 535 reply, as some servers do. Every loop is bounded (`max_misbehave_seconds`) and stops with
`stop()`, so a broken client cannot keep a test process busy.
"""

from __future__ import annotations

import base64
import select
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Self

import trustme

Point = Literal["greeting", "ehlo", "starttls", "auth", "data_command", "data"]
Behaviour = Literal["trickle", "stall", "drop"]
Security = Literal["none", "starttls", "ssl"]


@dataclass
class Misbehaviour:
    """When the server misbehaved once, and how long the client stayed before it left."""

    point: Point
    started: float  # time.monotonic()
    client_left_after: float | None = None  # seconds; None: the client never left (server stopped)


@dataclass
class _Session:
    sock: socket.socket
    buffer: bytes = b""
    mail_from: str = ""
    rcpt_tos: list[str] = field(default_factory=list)


class MisbehavingSmtpServer:
    """SMTP on 127.0.0.1 that trickles, stalls or drops at `point` (the first `times` occurrences)."""

    def __init__(
        self,
        point: Point | None = None,
        behaviour: Behaviour = "trickle",
        *,
        interval: float = 1.0,
        times: int | None = None,
        auth_mechanisms: tuple[str, ...] = (),
        username: str = "",
        password: str = "",
        echo_auth_blob: bool = False,
        echo_without_padding: bool = False,
        max_misbehave_seconds: float = 120.0,
        tls: Security = "none",
        data_reply: str = "250 2.0.0 OK: queued",
        replies: Mapping[str, str] | None = None,
    ) -> None:
        self.point = point
        self.behaviour = behaviour
        self.interval = interval
        self.times = times
        self.auth_mechanisms = auth_mechanisms
        self.username = username
        self.password = password
        self.echo_auth_blob = echo_auth_blob
        self.echo_without_padding = echo_without_padding
        self.max_misbehave_seconds = max_misbehave_seconds
        self.tls = tls
        self.data_reply = data_reply
        self.replies = {verb.upper(): line for verb, line in (replies or {}).items()}
        self.host = "127.0.0.1"
        self._ca: trustme.CA | None = None
        self._server_context: ssl.SSLContext | None = None
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self.ca_cert_path: Path | None = None
        self.connections = 0
        self.commands: list[str] = []  # verbs, in arrival order
        self.messages: list[bytes] = []  # payloads answered with `data_reply`
        self.payloads_received = 0  # payloads that arrived completely (answered or not)
        self.misbehaviours: list[Misbehaviour] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._clients: list[socket.socket] = []

    # --- lifecycle ---------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._listener is not None, "server not started"
        return int(self._listener.getsockname()[1])

    def start(self) -> Self:
        if self.tls != "none":
            self._ca = trustme.CA()
            self._server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ca.issue_cert(self.host).configure_cert(self._server_context)
            self._tmpdir = tempfile.TemporaryDirectory(prefix="misbehaving-smtp-")
            self.ca_cert_path = Path(self._tmpdir.name) / "ca.pem"
            self._ca.cert_pem.write_to_path(str(self.ca_cert_path))
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, 0))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listener = listener
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            _close(client)
        if self._listener is not None:
            _close(self._listener)
        for thread in self._threads:
            thread.join(timeout=5)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """The SMTP_* settings that point wa-export at this server (plain SMTP, login only with AUTH)."""
        return {
            "SMTP_SERVER": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_SECURITY": self.tls,
            "SMTP_USERNAME": self.username if self.auth_mechanisms else "",
            "SMTP_PASSWORD": self.password if self.auth_mechanisms else "",
            "SMTP_CA_FILE": str(self.ca_cert_path or ""),
        }

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                self.connections += 1
                self._clients.append(client)
            self._spawn(self._serve, _Session(client))

    # --- the conversation --------------------------------------------------------

    def _serve(self, session: _Session) -> None:
        try:
            if self._misbehaves_at("greeting"):  # with implicit TLS: before the handshake
                self._misbehave(session, "greeting", "220")
                return
            if self.tls == "ssl":
                session.sock = self._wrap(session.sock)
            self._send(session, "220 misbehaving.test ESMTP ready")
            while not self._stopped.is_set():
                line = self._read_line(session)
                if line is None:
                    return
                verb, _, argument = line.partition(" ")
                verb = verb.upper()
                with self._lock:
                    self.commands.append(verb)
                if not self._answer(session, verb, argument):
                    return
        except OSError:
            return
        finally:
            _close(session.sock)

    def _answer(self, session: _Session, verb: str, argument: str) -> bool:
        """Reply to one command; False when the conversation is over."""
        if verb in self.replies:
            self._send(session, self.replies[verb])  # a refusal: for DATA, no payload follows
            return True
        if verb == "EHLO":
            if self._misbehaves_at("ehlo"):
                self._misbehave(session, "ehlo", "250")
                return False
            lines = ["misbehaving.test", "SIZE 52428800", "8BITMIME"]
            if self.auth_mechanisms:
                lines.append("AUTH " + " ".join(self.auth_mechanisms))
            if self.point == "starttls" or (self.tls == "starttls" and not isinstance(session.sock, ssl.SSLSocket)):
                lines.append("STARTTLS")
            lines.append("HELP")
            self._send(session, "\r\n".join(f"250-{text}" for text in lines[:-1]) + f"\r\n250 {lines[-1]}")
        elif verb == "HELO":
            self._send(session, "250 misbehaving.test")
        elif verb == "AUTH":
            return self._auth(session, argument)
        elif verb == "STARTTLS":
            if not self._misbehaves_at("starttls"):
                if self.tls != "starttls":
                    self._send(session, "454 4.7.0 TLS not available")
                    return True
                self._send(session, "220 2.0.0 Ready to start TLS")
                session.sock, session.buffer = self._wrap(session.sock), b""
                return True
            self._send(session, "220 2.0.0 Ready to start TLS")
            self._misbehave(session, "starttls", "220")  # the handshake never gets an answer
            return False
        elif verb in ("MAIL", "RSET", "NOOP"):
            if verb == "MAIL":
                session.mail_from, session.rcpt_tos = argument, []
            self._send(session, "250 OK")
        elif verb == "RCPT":
            session.rcpt_tos.append(argument)
            self._send(session, "250 OK")
        elif verb == "DATA":
            if self._misbehaves_at("data_command"):
                self._misbehave(session, "data_command", "354")
                return False
            self._send(session, "354 End data with <CR><LF>.<CR><LF>")
            payload = self._read_payload(session)
            if payload is None:
                return False
            with self._lock:
                self.payloads_received += 1
            if self._misbehaves_at("data"):
                self._misbehave(session, "data", "250")
                return False
            with self._lock:
                self.messages.append(payload)
            self._send(session, self.data_reply)
        elif verb == "QUIT":
            self._send(session, "221 Bye")
            return False
        else:
            self._send(session, "502 5.5.2 Command not implemented")
        return True

    def _auth(self, session: _Session, argument: str) -> bool:
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in self.auth_mechanisms:
            self._send(session, "504 5.5.4 Unrecognized authentication type")
            return True
        if self._misbehaves_at("auth"):
            self._misbehave(session, "auth", "235")
            return False
        if mechanism == "PLAIN":
            blob = initial or self._challenge(session, "")
            if blob is None:
                return False
            parts = _decode(blob).split("\0")
            user, secret = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
            echoed = blob
        else:  # LOGIN
            user_blob = initial or self._challenge(session, "VXNlcm5hbWU6")
            if user_blob is None:
                return False
            password_blob = self._challenge(session, "UGFzc3dvcmQ6")
            if password_blob is None:
                return False
            user, secret = _decode(user_blob), _decode(password_blob)
            echoed = f"{user_blob} {password_blob}"
        if user == self.username and secret == self.password:
            self._send(session, "235 2.7.0 Authentication successful")
        elif self.echo_auth_blob:
            if self.echo_without_padding:
                echoed = " ".join(part.rstrip("=") for part in echoed.split(" "))
            self._send(session, f"535 5.7.8 Authentication credentials invalid: {echoed}")
        else:
            self._send(session, "535 5.7.8 Authentication credentials invalid")
        return True

    def _challenge(self, session: _Session, prompt: str) -> str | None:
        self._send(session, f"334 {prompt}")
        return self._read_line(session)

    # --- misbehaving -------------------------------------------------------------

    def _misbehaves_at(self, point: Point) -> bool:
        if point != self.point:
            return False
        with self._lock:
            if self.times is not None and len(self.misbehaviours) >= self.times:
                return False
            self.misbehaviours.append(Misbehaviour(point, time.monotonic()))
            return True

    def _misbehave(self, session: _Session, point: Point, code: str) -> None:
        """Trickle `code-` lines, stay silent, or hang up; return when the client has left."""
        with self._lock:
            record = self.misbehaviours[-1]
        if self.behaviour == "drop":
            _close(session.sock)
            return
        deadline = record.started + self.max_misbehave_seconds
        count = 0
        while not self._stopped.is_set() and time.monotonic() < deadline:
            if self._client_left(session, self.interval):
                record.client_left_after = time.monotonic() - record.started
                return
            if self.behaviour == "trickle":
                count += 1
                try:
                    session.sock.sendall(f"{code}-still working on it ({count})\r\n".encode())
                except OSError:
                    record.client_left_after = time.monotonic() - record.started
                    return

    def _client_left(self, session: _Session, wait: float) -> bool:
        """True when the client closed its end within `wait` seconds (anything it sends is ignored)."""
        try:
            readable, _, _ = select.select([session.sock], [], [], wait)
            if not readable:
                return False
            return session.sock.recv(65536) == b""
        except OSError:
            return True

    # --- plain I/O ---------------------------------------------------------------

    def _wrap(self, sock: socket.socket) -> ssl.SSLSocket:
        assert self._server_context is not None
        tls = self._server_context.wrap_socket(sock, server_side=True)
        with self._lock:
            self._clients.append(tls)
        return tls

    def _send(self, session: _Session, text: str) -> None:
        session.sock.sendall(text.encode() + b"\r\n")

    def _read_line(self, session: _Session) -> str | None:
        while b"\r\n" not in session.buffer:
            chunk = session.sock.recv(65536)
            if not chunk:
                return None
            session.buffer += chunk
        line, session.buffer = session.buffer.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _read_payload(self, session: _Session) -> bytes | None:
        while b"\r\n.\r\n" not in b"\r\n" + session.buffer:
            chunk = session.sock.recv(65536)
            if not chunk:
                return None
            session.buffer += chunk
        if session.buffer.startswith(b".\r\n"):
            payload, session.buffer = b"", session.buffer[3:]
        else:
            payload, session.buffer = session.buffer.split(b"\r\n.\r\n", 1)
        return payload


def _decode(blob: str) -> str:
    try:
        return base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", "replace")
    except ValueError:
        return ""


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


@contextmanager
def misbehaving(
    point: Point | None = None, behaviour: Behaviour = "trickle", **options: object
) -> Iterator[MisbehavingSmtpServer]:
    server = MisbehavingSmtpServer(point, behaviour, **options)  # type: ignore[arg-type]
    with server:
        yield server
