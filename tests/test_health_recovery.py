"""Health: failed exports clear after any later success, and the reasons read as sentences.

The installed CLI against the real test servers.
"""

from __future__ import annotations

import re
from datetime import timedelta

from bson import ObjectId

from helpers import health_checks
from seeding import add_workspace, utcnow

# "1 failed exports", "no address.." or "no. ." are what this guards against.
DOUBLED_PUNCTUATION = re.compile(r"\.\s*\.|;\s*;|\.\s*;")


# --- health: fresh installs, recovered exports, wording -----------------------------------------------


def test_failed_export_clears_after_a_scheduled_run_without_new_messages(mongo_db, make_env, cli, smtp_server):
    workspace_id = add_workspace(mongo_db, "Quiet Now")
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@quiet.test"})
    mongo_db.export_logs.insert_one(
        {
            "workspace_id": str(workspace_id),
            "workspace_name": "Quiet Now",
            "status": "failed",
            "created_at": utcnow() - timedelta(minutes=10),
            "error_message": "SMTP said no.",
        }
    )
    before = cli(["health", "--json"], env=env)
    assert before.returncode == 1
    failed = health_checks(before)["failed_exports"]
    assert failed["status"] == "failed"
    assert failed["reason"].startswith("1 failed export in the last 24 hours")  # not "1 failed exports"
    assert "SMTP said no" in failed["reason"] and not DOUBLED_PUNCTUATION.search(failed["reason"])

    run = cli(["export"], env=env)  # nothing new: no mail, no export_logs entry, but a success
    assert run.returncode == 0 and smtp_server.messages == [], run.stdout + run.stderr
    assert mongo_db.export_logs.count_documents({}) == 1

    checks = health_checks(cli(["health", "--json"], env=env))
    assert checks["failed_exports"]["status"] == "warning", checks["failed_exports"]
    assert "all delivered by a later run" in checks["failed_exports"]["reason"]
    assert [entry["id"] for entry in checks["failed_exports"]["details"]["recovered"]] == [str(workspace_id)]


def test_no_health_reason_has_doubled_punctuation(mongo_db, make_env, cli, smtp_server, tmp_path):
    broken = add_workspace(mongo_db, "Broken.")
    add_workspace(mongo_db, "No Address.")
    now = utcnow()
    mongo_db.export_logs.insert_many(
        [
            {
                "workspace_id": str(broken),
                "workspace_name": "Broken.",
                "status": "failed",
                "created_at": now - timedelta(minutes=minutes),
                "error_message": "the server said: no.  ",
            }
            for minutes in (5, 6)
        ]
    )
    env = make_env(
        EXPORT_DIR=str(tmp_path / "not-yet"),
        **{
            f"WORKSPACE_{broken}_EMAIL": "ops@broken.test",
            f"WORKSPACE_{ObjectId()}_EMAIL": "ops@nowhere.test",
            "WORKSPACE_nothex_EMAIL": "ops@malformed.test",
        },
    )
    checks_result = cli(["health", "--json"], env=env)
    code, checks = checks_result.returncode, health_checks(checks_result)
    assert code == 1
    assert checks["failed_exports"]["reason"].startswith("2 failed exports")
    for name, check in checks.items():
        reason = check["reason"].replace("Broken.", "Broken").replace("No Address.", "No Address")
        assert not DOUBLED_PUNCTUATION.search(reason), (name, check["reason"])
