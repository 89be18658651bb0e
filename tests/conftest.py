"""Shared fixtures: a real MongoDB wire server, a real SMTP server, the real CLI.

`cli` runs wa-export inside the test process (tests/inprocess_cli.py): fast, and
the same entry point, environment and working directory as the console script.
`cli_process` runs the installed console script in a child process: for tests
that need a real process (signals, --workers, faketime, a terminal, start-up).
WA_EXPORT_TEST_CLI=process makes `cli` start processes too (to compare the two).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from helpers import GatedSmtpServer
from inprocess_cli import run_wa_export
from seeding import SMTP_FROM, cli_env, run_cli
from servers import LocalMongoServer, LocalSmtpServer

# Fault-injection fixtures (an authenticating MongoDB, its env and runner) live in
# faultkit.py; registering it here lets test modules use them by name.
pytest_plugins = ("faultkit",)


@pytest.fixture(scope="session")
def mongo_server_uri() -> Iterator[str]:
    """A real MongoDB (WA_EXPORT_TEST_MONGODB_URI) or a mongoeco wire server for the session."""
    external = os.environ.get("WA_EXPORT_TEST_MONGODB_URI")
    if external:
        yield external
        return
    with LocalMongoServer() as server:
        yield server.uri


@pytest.fixture(scope="session")
def mongo_client(mongo_server_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_server_uri, tz_aware=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def db_name() -> str:
    return f"wa_export_test_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def mongo_db(mongo_client: MongoClient[dict[str, Any]], db_name: str) -> Iterator[Database[dict[str, Any]]]:
    """A fresh database for this test, dropped afterwards (only ever the one we named)."""
    db = mongo_client[db_name]
    try:
        yield db
    finally:
        mongo_client.drop_database(db_name)


@pytest.fixture
def smtp_server() -> Iterator[LocalSmtpServer]:
    with LocalSmtpServer(tls="starttls") as server:
        yield server


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "gated_smtp(parties, **options): the gated_smtp fixture's parties and server options"
    )


@pytest.fixture
def gated_smtp(request: pytest.FixtureRequest) -> Iterator[GatedSmtpServer]:
    """A GatedSmtpServer that holds each run's first mail until the test's `@pytest.mark.gated_smtp(parties)` runs
    are connected: the runs provably overlap (see helpers.GatedSmtpServer)."""
    marker = request.node.get_closest_marker("gated_smtp")
    assert marker is not None, "mark the test @pytest.mark.gated_smtp(parties, **server options)"
    with GatedSmtpServer(parties=marker.args[0], **marker.kwargs) as server:
        yield server


MakeEnv = Callable[..., dict[str, str]]


@pytest.fixture
def make_env(tmp_path: Path, mongo_server_uri: str, db_name: str, smtp_server: LocalSmtpServer) -> MakeEnv:
    """`make_env(**overrides)`: a complete, isolated environment for running the CLI.

    An override of None removes the variable.
    """

    def build(**overrides: Any) -> dict[str, str]:
        settings = {
            "MONGODB_URI": mongo_server_uri,
            "MONGODB_DATABASE": db_name,
            "SMTP_SERVER": smtp_server.host,
            "SMTP_PORT": str(smtp_server.port),
            "SMTP_USERNAME": smtp_server.username or "",
            "SMTP_PASSWORD": smtp_server.password or "",
            "SMTP_FROM": SMTP_FROM,
            "SMTP_SECURITY": "starttls",
            "SMTP_CA_FILE": str(smtp_server.ca_cert_path),
            "EXPORT_DIR": str(tmp_path / "exports"),
            "EXPORT_LAG_SECONDS": "0",
        }
        return cli_env(tmp_path, settings, overrides)

    return build


Cli = Callable[..., CompletedProcess[str]]
Runner = Callable[..., CompletedProcess[str]]


def _bound_cli(runner: Runner, tmp_path: Path, make_env: MakeEnv) -> Cli:
    def run(
        args: list[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        input: str | None = None,
    ) -> CompletedProcess[str]:
        return runner(args, env if env is not None else make_env(), tmp_path, timeout=timeout, input=input)

    return run


@pytest.fixture
def cli(tmp_path: Path, make_env: MakeEnv) -> Cli:
    """`cli(args, env=None, timeout=120, input=None)`: run wa-export in tmp_path with exactly `env`.

    Without `env`, uses `make_env()`. In this process (`timeout` then unused:
    pytest-timeout bounds the test), unless WA_EXPORT_TEST_CLI=process.
    """
    return _bound_cli(run_wa_export, tmp_path, make_env)


@pytest.fixture
def cli_process(tmp_path: Path, make_env: MakeEnv) -> Cli:
    """`cli_process(args, env=None, timeout=120, input=None)`: the installed wa-export, a child process in tmp_path."""
    return _bound_cli(run_cli, tmp_path, make_env)
