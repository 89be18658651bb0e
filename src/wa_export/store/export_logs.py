"""Writes and reads of `export_logs`, the original service's collection (every seed field kept).

A scheduled email's entry is inserted as `sending` before the email goes to
SMTP and turned `completed` or `failed` afterwards (`outcome_unknown: true`
when the mail layer says the server may have accepted it anyway), so an entry
still `sending` after its run means the outcome is unknown too; the next run
closes it as `failed` ("delivery outcome unknown: ...") and marks its own
re-delivery of either `possible_duplicate: true`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo.collection import Collection

from wa_export.clock import as_utc_or_none

EXPORT_TYPE = "whatsapp_messages"
STATUS_SENDING = "sending"
STATUS_COMPLETED = "completed"
STATUS_FAILED = "failed"
UNKNOWN_OUTCOME = "delivery outcome unknown"
IDS_PER_QUERY = 5_000


def insert_entry(collection: Collection[dict[str, Any]], entry: dict[str, Any]) -> None:
    collection.insert_one(entry)


def mark_completed(collection: Collection[dict[str, Any]], log_id: object, now: datetime) -> None:
    collection.update_one({"_id": log_id}, {"$set": {"status": STATUS_COMPLETED, "error_message": None,
                                                    "updated_at": now}})


def mark_failed(
    collection: Collection[dict[str, Any]], log_id: object, error: str, now: datetime, *, outcome_unknown: bool
) -> None:
    """The email failed; `outcome_unknown` when the server may have accepted it anyway (its range goes out flagged)."""
    collection.update_one({"_id": log_id}, {"$set": {"status": STATUS_FAILED, "error_message": error,
                                                    "outcome_unknown": outcome_unknown, "updated_at": now}})


def close_unknown_outcome(collection: Collection[dict[str, Any]], log_id: object, run_id: str, now: datetime) -> None:
    """An entry left `sending` by a run that died, lost its lease or could not record the result."""
    collection.update_one(
        {"_id": log_id, "status": STATUS_SENDING},
        {"$set": {
            "status": STATUS_FAILED,
            "error_message": (
                f"{UNKNOWN_OUTCOME}: the run stopped after handing this email to the SMTP server and before "
                f"recording the result; run {run_id} re-delivers these messages and marks them possible_duplicate"
            ),
            "outcome_unknown": True,
            "updated_at": now,
        }},
    )


def original_service_exports(
    collection: Collection[dict[str, Any]], workspace_ids: Sequence[str], since: datetime
) -> dict[str, datetime]:
    """Per workspace, the `export_timestamp` of its latest completed export by the original service since `since`.

    Entries this tool writes always carry a `run_id`; the original service's never do.
    One aggregation per 5,000 workspaces, bounded by `since`.
    """
    latest: dict[str, datetime] = {}
    ids = list(workspace_ids)
    for offset in range(0, len(ids), IDS_PER_QUERY):
        for group in collection.aggregate(
            [
                {"$match": {
                    "workspace_id": {"$in": ids[offset : offset + IDS_PER_QUERY]},
                    "export_type": EXPORT_TYPE,
                    "status": STATUS_COMPLETED,
                    "run_id": {"$exists": False},
                    "export_timestamp": {"$gte": since},
                }},
                {"$group": {"_id": "$workspace_id", "last": {"$max": "$export_timestamp"}}},
            ]
        ):
            moment = as_utc_or_none(group.get("last"))
            if moment is not None and isinstance(group.get("_id"), str):
                latest[group["_id"].lower()] = moment
    return latest


def recent_possible_duplicates(collection: Collection[dict[str, Any]], since: datetime) -> list[dict[str, Any]]:
    """Entries marked possible_duplicate since `since`, newest first (for `health`)."""
    return list(
        collection.find(
            {"possible_duplicate": True, "created_at": {"$gte": since}},
            {"workspace_id": 1, "workspace_name": 1, "created_at": 1, "message_count": 1},
        ).sort("created_at", -1).limit(100)
    )


__all__ = [
    "EXPORT_TYPE",
    "STATUS_COMPLETED",
    "STATUS_FAILED",
    "STATUS_SENDING",
    "UNKNOWN_OUTCOME",
    "close_unknown_outcome",
    "insert_entry",
    "mark_completed",
    "mark_failed",
    "original_service_exports",
    "recent_possible_duplicates",
]
