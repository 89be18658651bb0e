"""Overlapping runs, step by step in this process (the CLI tests show them racing for real).

A run that started earlier may reach a workspace after a run that started later
has already delivered it, moving its cursor past the earlier run's window end
(and past the earlier run's start time). That is normal, not a clock anomaly:
the earlier run must neither deliver it again nor pull the cursor back.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from pymongo import MongoClient

from helpers import mailed_contents, run_export
from seeding import add_chat, add_messages, add_workspace, settle_arrivals, utcnow
from wa_export.clock import DatabaseClock
from wa_export.export.delivery import deliver
from wa_export.export.plan import make_plan
from wa_export.export.results import ExportRequest, MailSession, RunContext
from wa_export.settings import load_settings
from wa_export.store.arrivals import ArrivalKey
from wa_export.store.connection import Store


def test_an_earlier_run_reaching_a_workspace_a_later_run_delivered_sends_nothing_and_keeps_the_cursor(
    mongo_db, make_env, tmp_path, monkeypatch, smtp_server
):
    workspace_id = add_workspace(mongo_db, "Raced")
    chat_id = add_chat(mongo_db, workspace_id)
    add_messages(mongo_db, chat_id, [{"content": "first", "timestamp": utcnow() - timedelta(seconds=10)}])
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ=make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "ops@raced.test"}))
    client: MongoClient[dict[str, Any]] = MongoClient(settings.mongodb_uri, tz_aware=True)
    store = Store(client, settings)
    try:
        # The earlier run plans (its clock starts now) and then waits, e.g. on a slow SMTP server.
        earlier = RunContext(
            settings,
            store,
            ExportRequest(),
            "earlier-run",
            DatabaseClock(store.database_now()),
            ArrivalKey(),
            MailSession(settings),
        )
        [item] = make_plan(earlier, store.workspaces_by_id([str(workspace_id)])).work
        time.sleep(3)
        add_messages(mongo_db, chat_id, [{"content": "second", "timestamp": utcnow()}])
        later = run_export(settings, store, ExportRequest())  # starts later, delivers both
        assert [ws.outcome for ws in later.workspaces] == ["completed"]
        moved = mongo_db.export_state.find_one({"_id": str(workspace_id)})["cursor"]
        assert moved > ArrivalKey().at(earlier.run_time), "the later run's window ends after the earlier run began"

        result = deliver(earlier, item)
        earlier.mail.close()
        assert result.outcome == "no_messages" and not result.anomalies, result
        assert mongo_db.export_state.find_one({"_id": str(workspace_id)})["cursor"] == moved, "never pulled back"

        settle_arrivals()
        again = run_export(settings, store, ExportRequest())
        assert again.message_count == 0
        assert sorted(mailed_contents(smtp_server.messages)) == ["first", "second"]  # each exactly once
    finally:
        client.close()
