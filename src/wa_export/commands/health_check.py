"""One health check's result, and the wording every check shares: one sentence per reason.

Reasons embed texts from elsewhere (driver errors, stored error messages,
names); `sentence` joins clauses so that none ends up with doubled
punctuation, and `count_noun` says "1 failed export", never "1 failed exports".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from wa_export.settings import Settings

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


def local_time(moment: datetime, settings: Settings) -> str:
    return f"{moment.astimezone(settings.export_timezone):%Y-%m-%d %H:%M} {settings.timezone_name}"


def named(items: list[str]) -> str:
    shown = ", ".join(items[:NAMES_SHOWN])
    return shown + (f" and {len(items) - NAMES_SHOWN} more" if len(items) > NAMES_SHOWN else "")


def count_noun(number: int, noun: str) -> str:
    """"1 failed export", "2 failed exports"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def has(number: int) -> str:
    return "has" if number == 1 else "have"


def is_(number: int) -> str:
    return "is" if number == 1 else "are"


def clause(text: str) -> str:
    """Text from elsewhere (an error, a sentence) made fit to continue a sentence: no final punctuation."""
    return text.strip().rstrip(".;: ")


def sentence(clauses: list[str]) -> str:
    """Clauses joined with "; " into one sentence with one capital and one final period."""
    text = "; ".join(clause(part) for part in clauses if clause(part))
    return (text[:1].upper() + text[1:] + ".") if text else ""


__all__ = ["NAMES_SHOWN", "Check", "CheckStatus", "clause", "count_noun", "has", "is_", "local_time", "named",
           "sentence"]
