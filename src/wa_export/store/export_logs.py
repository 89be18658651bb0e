"""Reads of `export_logs` (its writes are in store/logs.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pymongo.collection import Collection

from wa_export.clock import as_utc_or_none
from wa_export.store.logs import EXPORT_TYPE, STATUS_COMPLETED

IDS_PER_QUERY = 5_000


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
                {
                    "$match": {
                        "workspace_id": {"$in": ids[offset : offset + IDS_PER_QUERY]},
                        "export_type": EXPORT_TYPE,
                        "status": STATUS_COMPLETED,
                        "run_id": {"$exists": False},
                        "export_timestamp": {"$gte": since},
                    }
                },
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
        )
        .sort("created_at", -1)
        .limit(100)
    )


__all__ = ["original_service_exports", "recent_possible_duplicates"]
