"""A MONGODB_DATABASE without a `workspaces` collection: every command that reads the platform's data refuses it.

Exit 2 with one sentence, the same for every command, and nothing is written
there: the misspelt database does not exist afterwards.
"""

from __future__ import annotations

import pytest
from bson import ObjectId

from helpers import one_stderr_line
from seeding import add_workspace
from wa_export.settings import load_settings
from wa_export.store.connection import Store

WORKSPACE = str(ObjectId())
CLEANUP_PREFIX = "the files were cleaned, but the cleanup event could not be recorded in system_logs: "

COMMANDS = [
    ["export"],
    ["export", "--dry-run"],
    ["export", "--no-email"],
    ["export", "--workspace", WORKSPACE],
    ["export", "--hours", "2"],
    ["stats"],
    ["stats", WORKSPACE],
    ["logs"],
    ["logs", WORKSPACE],
    ["logs", "--system"],
    ["state"],
    ["state", WORKSPACE],
    ["state", WORKSPACE, "--move-to", "2026-01-01T00:00"],
    ["health"],
    ["test-email", "--workspace", WORKSPACE],  # reads the address from the workspace (EXPORT_RECIPIENTS_FIELD)
    ["cleanup"],  # cleans files only; its system_logs event is what it would write there
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda args: " ".join("ID" if arg == WORKSPACE else arg for arg in args))
def test_every_command_refuses_a_database_without_workspaces(
    args, mongo_db, make_env, cli, smtp_server, tmp_path, monkeypatch
):
    add_workspace(mongo_db, "Lives Elsewhere")
    typo = f"{mongo_db.name}_typo"
    env = make_env(MONGODB_DATABASE=typo, EXPORT_RECIPIENTS_FIELD="settings.export_email")
    monkeypatch.chdir(tmp_path)
    expected = _refusal(env)
    assert mongo_db.name in expected and repr(typo) in expected  # names where the workspaces are

    result = cli(args, env=env)

    assert result.returncode == 2, result.stdout + result.stderr
    line = one_stderr_line(result.stderr)
    sentence = line.removeprefix("wa-export: ").removeprefix(CLEANUP_PREFIX if args == ["cleanup"] else "")
    assert sentence == expected
    assert typo not in mongo_db.client.list_database_names()
    assert smtp_server.connection_count == 0


def _refusal(env: dict[str, str]) -> str:
    """The sentence, as the store words it for these settings."""
    settings = load_settings(environ=env)
    store = Store.open(settings)
    try:
        problem = store.workspaces_collection_problem()
    finally:
        store.close()
    assert problem is not None
    return problem
