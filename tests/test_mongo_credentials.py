"""A MongoDB that refuses the credentials is named as such, not as "unreachable".

Against faultkit's MongoDB that requires a user and password (mongoeco sends no
error code, only a message), and by code for servers that send one.
"""

from __future__ import annotations

import pytest
from pymongo.errors import OperationFailure

from faultkit import MONGO_USER, AuthMongoServer
from helpers import health_checks, one_stderr_line
from seeding import add_workspace
from wa_export.store.connection import authentication_problem

WRONG_PASSWORD = "Wrong-Mongo-Pw_5521"


# --- MongoDB refusing the credentials -------------------------------------------------------------


def test_refused_credentials_are_named_with_the_auth_hint(auth_mongo: AuthMongoServer, make_env, cli, smtp_server):
    auth_server = auth_mongo  # faultkit: a MongoDB that requires a user and password
    wrong = auth_server.uri_for(MONGO_USER, WRONG_PASSWORD)
    for command in (["export"], ["logs"]):
        result = cli(command, env=make_env(MONGODB_URI=wrong, MONGODB_TIMEOUT_SECONDS="3"))
        assert result.returncode == 3, result.stdout + result.stderr
        sentence = one_stderr_line(result.stderr)
        assert "refused the credentials" in sentence and "authSource" in sentence and "password" in sentence
        assert "unreachable" not in sentence and "full error" not in sentence
        assert WRONG_PASSWORD not in result.stdout + result.stderr

    checks_result = cli(["health", "--json"], env=make_env(MONGODB_URI=wrong, MONGODB_TIMEOUT_SECONDS="3"))
    code, checks = checks_result.returncode, health_checks(checks_result)
    assert code == 1 and "refused the credentials" in checks["mongodb"]["reason"]

    no_login = cli(["logs"], env=make_env(MONGODB_URI=auth_server.uri, MONGODB_TIMEOUT_SECONDS="3"))
    assert no_login.returncode == 3
    sentence = one_stderr_line(no_login.stderr)
    assert "requires a login" in sentence and "MONGODB_URI" in sentence

    env = make_env(MONGODB_URI=auth_server.auth_uri)
    with auth_server.client() as client:  # the platform's database: logs refuses any other (exit 2)
        add_workspace(client[env["MONGODB_DATABASE"]], "Acme")
    right = cli(["logs"], env=env)
    assert right.returncode == 0, right.stderr  # the same server with the right password is fine


@pytest.mark.parametrize("code", [18, 8000])
def test_authentication_failures_are_recognised_by_code_alone(code: int) -> None:
    # A real MongoDB (18) or Atlas (8000) with a message that says nothing about authentication.
    assert "authSource" in (authentication_problem(OperationFailure("no details", code)) or "")
    assert authentication_problem(OperationFailure("no details", 2)) is None
