"""Shared pieces of the fault tests: SMTP faults, dying processes, full disks, overlapping runs.

* `AuthMongoServer`: a `LocalMongoServer` *with a user and password*, so every
  fault test runs with a real password inside MONGODB_URI and can check that
  it never leaks. It can be killed and restarted on the same port; with
  `data_path` (SQLite) the data survives.
* Distinctive secrets and `assert_no_secrets`, which greps everything an
  operator or a recipient could see: stdout, stderr, export_logs, system_logs
  and every captured email.
* Small bookkeeping helpers (new messages now, what was delivered) and the
  fixtures `auth_mongo` (its login from `mongo_login`), `fdb`, `smtp`, `env`, `run`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from bson import ObjectId
from pymongo import MongoClient
from pymongo.database import Database

from helpers import mailed_contents
from inprocess_cli import run_wa_export
from seeding import SMTP_FROM, add_messages, cli_env, utcnow
from servers import CapturedMessage, LocalMongoServer, LocalSmtpServer

MONGO_USER = "wa_export_app"
# Distinctive values: any occurrence in an output is a leak, never a coincidence.
MONGO_PASSWORD = "Mongo-Pw_7Qz93xKf"
SMTP_PASSWORD = "Smtp-Pw_Zk4471qRv"
WRONG_SMTP_PASSWORD = "Wrong-Pw_Qv882mLp"
SECRETS = (MONGO_PASSWORD, SMTP_PASSWORD, WRONG_SMTP_PASSWORD)
SMTP_USER = "wa-export"


class AuthMongoServer(LocalMongoServer):
    """A LocalMongoServer that requires `user` / `password`; `auth_uri` logs in with them."""

    def __init__(self, data_path: Path | None = None, user: str = MONGO_USER, password: str = MONGO_PASSWORD) -> None:
        super().__init__(data_path=data_path, users=[(user, password)])
        self.user, self.password = user, password

    @property
    def auth_uri(self) -> str:
        return self.uri_for(self.user, self.password)

    def client(self, **options: Any) -> MongoClient[dict[str, Any]]:
        return MongoClient(self.auth_uri, tz_aware=True, serverSelectionTimeoutMS=10_000, **options)


# --------------------------------------------------------------------------- secrets


def assert_no_secrets(
    *texts: str | None, db: Database[Any] | None = None, mails: Iterable[CapturedMessage] = ()
) -> None:
    """None of SECRETS in any output, log document or mail."""
    haystacks: list[tuple[str, str]] = [(f"output #{index}", text or "") for index, text in enumerate(texts)]
    if db is not None:
        haystacks.append(("export_logs", repr(list(db.export_logs.find()))))
        haystacks.append(("system_logs", repr(list(db.system_logs.find()))))
    for number, mail in enumerate(mails):
        haystacks.append((f"mail #{number}", mail.data.decode("utf-8", "replace")))
    for where, text in haystacks:
        for secret in SECRETS:
            assert secret not in text, f"a secret leaked into {where}"


# --------------------------------------------------------------------------- data


def add_now(db: Database[Any], workspace_id: ObjectId, contents: Sequence[str]) -> None:
    """New messages for an existing workspace, a few ms in the past."""
    chat = db.chats.find_one({"workspace_id": workspace_id})
    assert chat is not None
    now = utcnow()
    add_messages(
        db,
        chat["_id"],
        [
            {"content": text, "timestamp": now - timedelta(milliseconds=50 - index % 40)}
            for index, text in enumerate(contents)
        ],
    )
    # add_messages waited until their arrival second is over: a run with
    # EXPORT_LAG_SECONDS=0 starting now includes them (window ends are whole seconds).


def delivered(mails: Iterable[CapturedMessage]) -> list[str]:
    """The first word of every mailed Message Content cell (padding stripped)."""
    return [text.split(" ", 1)[0] for text in mailed_contents(list(mails))]


def first_arrival(db: Database[Any]) -> ObjectId:
    return db.messages.find_one({}, sort=[("_id", 1)])["_id"]


def last_arrival(db: Database[Any]) -> ObjectId:
    return db.messages.find_one({}, sort=[("_id", -1)])["_id"]


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text


# --------------------------------------------------------------------------- fixtures
# Available to every test module: conftest registers this module as a plugin.


@pytest.fixture(scope="module")
def mongo_login() -> tuple[str, str]:
    """The user and password `auth_mongo` requires; a test module overrides it to try other passwords."""
    return MONGO_USER, MONGO_PASSWORD


@pytest.fixture(scope="module")
def auth_mongo(mongo_login: tuple[str, str]) -> Iterator[AuthMongoServer]:
    user, password = mongo_login
    with AuthMongoServer(user=user, password=password) as server:
        yield server


@pytest.fixture
def fdb(auth_mongo: AuthMongoServer) -> Iterator[Database[dict[str, Any]]]:
    client = auth_mongo.client()
    name = f"wa_export_faults_{uuid.uuid4().hex[:8]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


@pytest.fixture
def smtp() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer(tls="starttls", username=SMTP_USER, password=SMTP_PASSWORD) as server:
        yield server


Env = Callable[..., dict[str, str]]


@pytest.fixture
def env(tmp_path: Path, auth_mongo: AuthMongoServer, fdb: Database[Any], smtp: LocalSmtpServer) -> Env:
    """`env(server=None, **overrides)`: the CLI's environment against `server` (default: the healthy one)."""

    def build(server: LocalSmtpServer | None = None, **overrides: Any) -> dict[str, str]:
        target = server or smtp
        settings = {
            "MONGODB_URI": auth_mongo.auth_uri,
            "MONGODB_DATABASE": fdb.name,
            "SMTP_SERVER": target.host,
            "SMTP_PORT": str(target.port),
            "SMTP_USERNAME": SMTP_USER,
            "SMTP_PASSWORD": SMTP_PASSWORD,
            "SMTP_FROM": SMTP_FROM,
            "SMTP_SECURITY": "starttls",
            "SMTP_CA_FILE": str(target.ca_cert_path),
            "SMTP_TIMEOUT_SECONDS": "10",
            "EXPORT_DIR": str(tmp_path / "exports"),
            "EXPORT_LAG_SECONDS": "0",
        }
        return cli_env(tmp_path, settings, overrides)

    return build


Run = Callable[..., CompletedProcess[str]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    def run_export(env: dict[str, str], *args: str) -> CompletedProcess[str]:
        return run_wa_export(["export", *args], env, tmp_path, timeout=90)

    return run_export
