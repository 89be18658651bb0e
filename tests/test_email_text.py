"""The export email's window sentence: plain times in the operator's zone, the end's date only when it differs."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from wa_export.export.email_text import window_sentence

KOLKATA = ZoneInfo("Asia/Kolkata")


def test_same_day_window_names_the_date_once() -> None:
    start = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)  # 19:30 in Kolkata
    end = datetime(2026, 12, 1, 14, 15, tzinfo=UTC)
    assert window_sentence(start, end, KOLKATA, "Asia/Kolkata") == (
        "Messages from 2026-12-01 19:30:00 to 19:45:00 (Asia/Kolkata)"
    )


def test_window_across_midnight_names_both_dates() -> None:
    start = datetime(2026, 12, 1, 18, 25, tzinfo=UTC)  # 23:55 in Kolkata
    end = datetime(2026, 12, 1, 18, 40, tzinfo=UTC)  # 00:10 the next day
    assert window_sentence(start, end, KOLKATA, "Asia/Kolkata") == (
        "Messages from 2026-12-01 23:55:00 to 2026-12-02 00:10:00 (Asia/Kolkata)"
    )
