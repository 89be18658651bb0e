"""The export email in its reader's words: the window in the operator's zone (the end's date only when it
differs), the Status values explained, and a manual export saying so in its subject and first line."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from helpers import plain_body
from seeding import seed_workspace
from wa_export.export.email_text import window_sentence

KOLKATA = ZoneInfo("Asia/Kolkata")


def test_same_day_window_names_the_date_once() -> None:
    start = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # 19:30 in Kolkata
    end = datetime(2026, 12, 1, 14, 15, tzinfo=UTC)
    assert window_sentence(start, end, KOLKATA, "Asia/Kolkata") == (
        "Messages received or sent between 2026-12-01 19:30:00 and 19:45:00 (Asia/Kolkata)"
    )


def test_window_across_midnight_names_both_dates() -> None:
    start = datetime(2026, 12, 1, 18, 25, tzinfo=UTC)  # 23:55 in Kolkata
    end = datetime(2026, 12, 1, 18, 40, tzinfo=UTC)  # 00:10 the next day
    assert window_sentence(start, end, KOLKATA, "Asia/Kolkata") == (
        "Messages received or sent between 2026-12-01 23:55:00 and 2026-12-02 00:10:00 (Asia/Kolkata)"
    )


def _mail(cli, make_env, mongo_db, smtp_server, args):
    workspace_id = seed_workspace(mongo_db, "Corner Shop", ["hello", "how much?"], minutes_ago=5)
    env = make_env(**{f"WORKSPACE_{workspace_id}_EMAIL": "owner@shop.example"})
    result = cli(args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    [captured] = smtp_server.messages
    message = captured.message()
    return str(message["Subject"]).strip(), plain_body(message)  # a long subject is folded after "Subject:"


def test_a_scheduled_email_speaks_the_recipients_language(cli, make_env, mongo_db, smtp_server):
    subject, body = _mail(cli, make_env, mongo_db, smtp_server, ["export"])
    assert subject.startswith("WhatsApp Messages Export - Corner Shop - ")
    assert body.splitlines()[0] == "WhatsApp messages export for Corner Shop"
    assert "Messages received or sent between " in body and "reached the platform" not in body
    # Every Status value in the counts is explained, in one line.
    [explained] = [line for line in body.splitlines() if line.startswith("Status: ")]
    for status in ("received", "sent_via_ai", "sent_by_human"):
        assert f"{status} = " in explained
    assert body.rstrip().endswith("Sent automatically by wa-export.")


def test_a_manual_email_says_so_in_its_subject_and_first_line(cli, make_env, mongo_db, smtp_server):
    subject, body = _mail(cli, make_env, mongo_db, smtp_server, ["export", "--hours", "1"])
    assert subject.startswith("[Manual export] WhatsApp Messages Export - Corner Shop - ")
    assert body.splitlines()[0].startswith("Manual WhatsApp messages export for Corner Shop")
    assert "Messages received or sent between " in body and "automatically" not in body


def test_a_resent_email_says_so_in_its_first_line(cli, make_env, mongo_db, smtp_server):
    _mail(cli, make_env, mongo_db, smtp_server, ["export"])
    [entry] = mongo_db.export_logs.find({"status": "completed"})
    resent = cli(
        ["resend", str(entry["_id"])],
        env=make_env(**{f"WORKSPACE_{entry['workspace_id']}_EMAIL": "owner@shop.example"}),
    )
    assert resent.returncode == 0, resent.stdout + resent.stderr
    message = smtp_server.messages[-1].message()
    assert str(message["Subject"]).strip().startswith("[Re-sent] WhatsApp Messages Export - Corner Shop - ")
    assert plain_body(message).splitlines()[0].startswith("Re-sent WhatsApp messages export for Corner Shop")
