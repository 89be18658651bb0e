"""`export --dry-run` decides every workspace as the real run does, then writes nothing."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from helpers import one_stderr_line, parse_json
from seeding import seed_workspace, utcnow

# The one outcome named differently: what the real run does, a dry run only counts.
DRY_RUN_MEANS = {"dry_run": "completed"}


def _workspace(db: Any, name: str, messages: int) -> str:
    return str(seed_workspace(db, name, [f"{name}-{n}" for n in range(messages)]))


def _snapshot(db: Any) -> dict[str, list[dict[str, Any]]]:
    return {name: list(db[name].find()) for name in db.list_collection_names()}


@pytest.mark.parametrize("window", [[], ["--hours", "2"]], ids=["scheduled", "manual"])
def test_dry_run_decides_each_workspace_as_the_real_run(window, mongo_db, make_env, cli, smtp_server):
    ids = {
        "valid": _workspace(mongo_db, "Valid", 3),
        "missing": _workspace(mongo_db, "Missing", 2),
        "invalid": _workspace(mongo_db, "Invalid", 2),
        "disallowed": _workspace(mongo_db, "Disallowed", 1),
        "invalid, nothing new": _workspace(mongo_db, "Quiet", 0),
        "leased": _workspace(mongo_db, "Leased", 1),
    }
    # Another run is exporting this one right now (its lease holds for an hour).
    mongo_db.export_state.insert_one(
        {"_id": ids["leased"], "lease_owner": "another-host-1-abc", "lease_expires_at": utcnow() + timedelta(hours=1)}
    )
    env = make_env(
        EXPORT_ALLOWED_EMAIL_DOMAINS="ok.test",
        **{
            f"WORKSPACE_{ids['valid']}_EMAIL": "ops@ok.test",
            f"WORKSPACE_{ids['invalid']}_EMAIL": "not-an-address",
            f"WORKSPACE_{ids['disallowed']}_EMAIL": "ops@elsewhere.test",
            f"WORKSPACE_{ids['invalid, nothing new']}_EMAIL": "also not an address",
            f"WORKSPACE_{ids['leased']}_EMAIL": "ops@ok.test",
        },
    )
    before = _snapshot(mongo_db)

    dry = cli(["export", "--dry-run", "--json", *window], env=env)

    assert _snapshot(mongo_db) == before  # no export_state, no export_logs, no run event
    assert not Path(env["EXPORT_DIR"]).exists()
    assert smtp_server.connection_count == 0

    real = cli(["export", "--json", *window], env=env)

    dry_outcomes, real_outcomes = _outcomes(dry, ids), _outcomes(real, ids)
    expected_real = {
        "valid": "completed",
        "missing": "skipped",
        "invalid": "failed",
        "disallowed": "failed",
        "invalid, nothing new": "no_messages" if not window else "failed",
        "leased": "skipped" if not window else "completed",  # a manual export takes no lease
    }
    assert real_outcomes == expected_real
    assert {name: DRY_RUN_MEANS.get(outcome, outcome) for name, outcome in dry_outcomes.items()} == real_outcomes
    assert dry.returncode == real.returncode == 1, dry.stdout + real.stdout
    dry_reasons = {ws["workspace_id"]: ws["reason"] for ws in parse_json(dry)["workspaces"]}
    real_reasons = {ws["workspace_id"]: ws["reason"] for ws in parse_json(real)["workspaces"]}
    for name in ("missing", "invalid", "disallowed", "leased"):
        assert dry_reasons[ids[name]] == real_reasons[ids[name]], name


def _outcomes(result: Any, ids: dict[str, str]) -> dict[str, str]:
    by_id = {ws["workspace_id"]: ws["outcome"] for ws in parse_json(result)["workspaces"]}
    return {name: by_id[workspace_id] for name, workspace_id in ids.items()}


def test_dry_run_refuses_what_the_real_run_refuses(mongo_db, make_env, cli, smtp_server):
    """A run that would email needs SMTP settings: a dry run says so too (exit 2), before counting anything."""
    workspace_id = _workspace(mongo_db, "Valid", 1)
    env = make_env(SMTP_SERVER=None, **{f"WORKSPACE_{workspace_id}_EMAIL": "ops@ok.test"})
    dry, real = cli(["export", "--dry-run"], env=env), cli(["export"], env=env)
    assert dry.returncode == real.returncode == 2, dry.stdout + dry.stderr
    assert one_stderr_line(dry.stderr) == one_stderr_line(real.stderr)
    assert "export_state" not in mongo_db.list_collection_names()


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "workers"])
def test_dry_run_summary_says_what_the_run_would_send(workers, mongo_db, make_env, cli, smtp_server):
    ids = {
        "valid": _workspace(mongo_db, "Valid", 3),
        "missing": _workspace(mongo_db, "Missing", 2),
        "invalid": _workspace(mongo_db, "Invalid", 2),
    }
    env = make_env(
        **{f"WORKSPACE_{ids['valid']}_EMAIL": "ops@ok.test", f"WORKSPACE_{ids['invalid']}_EMAIL": "not-an-address"}
    )
    dry = cli(["export", "--dry-run", *workers], env=env)
    assert dry.returncode == 1, dry.stdout + dry.stderr
    lines = dry.stdout.splitlines()
    [summary] = [line for line in lines if "export run" in line and "(dry run)" in line and "worker " not in line]
    # The refused workspace's 2 messages are waiting, not to be sent; the skipped one's were never counted.
    for part in (
        ": 3 workspaces, would send 1 email for 1 workspace, 3 messages to send,",
        ", 1 skipped (messages not counted), 1 failed (2 messages not to be sent)",
        "; nothing was written or sent",
    ):
        assert part in summary, summary
    assert "0 emailed" not in dry.stdout and "5 messages" not in dry.stdout  # in a worker's line neither
    [skipped] = [line for line in dry.stdout.splitlines() if f"workspace={ids['missing']}" in line]
    assert "outcome=skipped messages=– " in skipped  # as the terminal's table: not a misleading 0
    [valid] = [line for line in dry.stdout.splitlines() if f"workspace={ids['valid']}" in line]
    assert "outcome=dry_run messages=3" in valid


def test_dry_run_with_no_email_says_it_would_write_and_send_nothing(mongo_db, make_env, cli):
    workspace_id = _workspace(mongo_db, "Files Only", 2)
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@ok.test"})
    dry = cli(["export", "--dry-run", "--no-email"], env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    [summary] = [line for line in dry.stdout.splitlines() if "(dry run)" in line]
    assert "would send 0 emails for 0 workspaces" in summary, summary
    assert "would write the workbooks of 1 workspace without emailing" in summary, summary
