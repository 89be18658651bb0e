"""One `health` check's result: a name, ok / warning / failed / skipped, one sentence, and details for --json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

CheckStatus = Literal["ok", "warning", "failed", "skipped"]
NAMES_SHOWN = 10  # longer lists are cut in the reason; `details` (and --json) has them all


@dataclass
class Check:
    name: str
    status: CheckStatus
    reason: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "reason": self.reason, "details": self.details}


def named(items: list[str]) -> str:
    """The first NAMES_SHOWN items, comma separated, and how many more."""
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


__all__ = ["NAMES_SHOWN", "Check", "CheckStatus", "named"]
