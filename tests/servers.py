"""The test suite's servers: the product's loopback servers plus test-only modes and fault switches.

The demo needs plain capturing servers (wa_export/demo/servers.py); tests also need
SMTP servers with implicit TLS or none, an untrusted CA, connection and AUTH counters, that refuse recipients
or drop the connection during DATA, and a MongoDB on a given port, with a data file, that requires
authentication or can be SIGKILLed and restarted. Those switches live here so the product ships only what the
demo uses.
"""

from __future__ import annotations

import asyncio
import email
import email.message
import email.policy
import json
import os
import ssl
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

import trustme

from wa_export.demo import servers as demo
from wa_export.demo.servers import (
    LOOPBACK,
    CapturingHandler,
    LocalServerError,
    free_port,
    write_eml,
)

__all__ = [
    "CapturedMessage",
    "LocalMongoServer",
    "LocalServerError",
    "LocalSmtpServer",
    "free_port",
    "write_eml",
]

# How LocalMongoServer hands user passwords to its child (not argv: `ps` shows argv).
MONGO_USERS_ENV = "WA_EXPORT_TEST_MONGO_USERS"
_TEST_CHILD = Path(__file__).with_name("mongo_child.py")


class CapturedMessage(demo.CapturedMessage):
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


class _FaultyHandler(CapturingHandler):
    """Refuses the owner's listed recipients; with drop_connection_during_data, never answers DATA."""

    owner: LocalSmtpServer

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]) -> str:
        if address.lower() in self.owner.refuse_recipients:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.owner.drop_connection_during_data:
            # The whole message arrived but the final 250 never will: the
            # client sees the connection vanish. Abort (not close) so no TLS
            # close_notify is sent, then wait to be cancelled by
            # connection_lost, which is aiosmtpd's normal disconnect path.
            server.transport.abort()
            await asyncio.Event().wait()
        return await super().handle_DATA(server, session, envelope)


class LocalSmtpServer(demo.LocalSmtpServer):
    """The product's capturing SMTP server, plus: a fixed `port`; `tls="ssl"` (TLS from the first byte) or
    `"none"` (plain text) instead of STARTTLS; a `certificate_authority` the client does not trust ("certificate
    from an unknown CA"); `connection_count`, `auth_successes`, `auth_failures`; refused recipients and a
    dropped DATA."""

    def __init__(
        self,
        *,
        port: int = 0,
        tls: Literal["starttls", "ssl", "none"] = "starttls",
        certificate_authority: trustme.CA | None = None,
        refuse_recipients: Collection[str] = (),
        drop_connection_during_data: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.port, self.tls, self.listener_tls = port, tls, tls == "ssl"
        self.certificate_authority = certificate_authority or self.certificate_authority
        self.connection_count = self.auth_failures = self.auth_successes = 0
        self.refuse_recipients = frozenset(r.lower() for r in refuse_recipients)
        self.drop_connection_during_data = drop_connection_during_data

    def client_ssl_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts this server's CA."""
        return ssl.create_default_context(cafile=str(self.ca_cert_path))

    def start(self) -> LocalSmtpServer:
        if self._controller is None:
            super().start()
            with self._cond:
                self.connection_count = 0  # Controller.start() connected once itself to wake the server
        return self

    def make_handler(self) -> Any:
        return _FaultyHandler(self)

    def _make_protocol(self) -> Any:
        with self._cond:
            self.connection_count += 1
        protocol = super()._make_protocol()
        if self.tls != "starttls":  # no STARTTLS offered or required; AUTH allowed without it
            protocol.tls_context, protocol.require_starttls, protocol._auth_require_tls = None, False, False
        return protocol

    def _authenticate(self, *args: Any) -> Any:
        result = super()._authenticate(*args)
        with self._cond:
            if result.success:
                self.auth_successes += 1
            else:
                self.auth_failures += 1
        return result

    def _record(self, captured: demo.CapturedMessage) -> None:
        super()._record(CapturedMessage(captured.mail_from, captured.rcpt_tos, captured.data))


class LocalMongoServer(demo.LocalMongoServer):
    """The product's mongoeco server, plus a fixed `port`, a `startup_timeout`, authentication, SIGKILL and
    restart on the same port; with `data_path` its data lives in a SQLite file and survives restarts.

    With `users` ((name, password) pairs, authSource `admin`, SCRAM-SHA-256) every
    command needs authentication; `uri_for(name, password)` builds a URI pymongo
    logs in with. Passwords reach the child through its environment, never its
    argv (visible in `ps`).
    """

    def __init__(
        self,
        data_path: Path | None = None,
        port: int = 0,
        startup_timeout: float = 30.0,
        users: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__()
        self.data_path = Path(data_path) if data_path is not None else None
        self.port, self.startup_timeout = port, startup_timeout
        self.users: tuple[tuple[str, str], ...] = tuple((str(name), str(pw)) for name, pw in users)

    def uri_for(self, username: str, password: str, database: str = "") -> str:
        """A URI that authenticates as `username` (mongoeco speaks SCRAM-SHA-256, not SHA-1)."""
        if not self.port:
            raise LocalServerError("LocalMongoServer has no port yet; call start() first")
        return (
            f"mongodb://{quote(username, safe='')}:{quote(password, safe='')}@{LOOPBACK}:{self.port}/{database}"
            "?directConnection=true&authSource=admin&authMechanism=SCRAM-SHA-256"
        )

    def child_command(self) -> list[str]:
        command = super().child_command()
        if self.users or self.data_path is not None:
            command[1:3] = [str(_TEST_CHILD)]  # the same arguments, to the test-only entry point
        return command if self.data_path is None else [*command, "--data", str(self.data_path)]

    def child_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != MONGO_USERS_ENV}
        if self.users:
            env[MONGO_USERS_ENV] = json.dumps([list(user) for user in self.users])
        return env

    def kill(self) -> None:
        """SIGKILL the server (fault injection); `restart()` brings it back on the same port."""
        self.stop(graceful=False)

    def restart(self) -> None:
        """Stop the server if it runs and start it again on the same port."""
        self.stop()
        self.start()
