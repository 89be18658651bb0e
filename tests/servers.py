"""The test suite's servers: the product's loopback servers plus test-only fault switches.

The demo needs plain capturing servers (wa_export/demo/smtp_server.py, mongo_server.py); tests also need
SMTP servers that refuse recipients or drop the connection during DATA, and a
MongoDB that requires authentication or can be SIGKILLed and restarted. Those
switches live here so the product ships only what the demo uses.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from wa_export.demo import mongo_server, smtp_server
from wa_export.demo.smtp_server import (
    LOOPBACK,
    CapturedMessage,
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
_AUTH_CHILD = Path(__file__).with_name("auth_mongo_child.py")


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


class LocalSmtpServer(smtp_server.LocalSmtpServer):
    """The product's capturing SMTP server, plus refused recipients and a dropped DATA."""

    def __init__(
        self,
        *,
        refuse_recipients: Collection[str] = (),
        drop_connection_during_data: bool = False,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.refuse_recipients = frozenset(r.lower() for r in refuse_recipients)
        self.drop_connection_during_data = drop_connection_during_data

    def make_handler(self) -> Any:
        return _FaultyHandler(self)


class LocalMongoServer(mongo_server.LocalMongoServer):
    """The product's mongoeco server, plus authentication, SIGKILL and restart on the same port.

    With `users` ((name, password) pairs, authSource `admin`, SCRAM-SHA-256) every
    command needs authentication; `uri_for(name, password)` builds a URI pymongo
    logs in with. Passwords reach the child through its environment, never its
    argv (visible in `ps`).
    """

    def __init__(self, *args: Any, users: Sequence[tuple[str, str]] = (), **options: Any) -> None:
        super().__init__(*args, **options)
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
        if self.users:
            command[1:3] = [str(_AUTH_CHILD)]  # the same arguments, to the authenticating entry point
        return command

    def child_env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if key != MONGO_USERS_ENV}
        if self.users:
            env[MONGO_USERS_ENV] = json.dumps([list(user) for user in self.users])
        return env

    def kill(self) -> None:
        """SIGKILL the server (fault injection); `restart()` brings it back on the same port."""
        self._terminate(graceful=False)

    def restart(self) -> None:
        """Stop the server if it runs and start it again on the same port."""
        self._terminate(graceful=True)
        self.start()
