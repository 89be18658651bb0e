"""The Status rule: what a message's direction and AI flag make of its Status cell.

| direction | Status |
|---|---|
| incoming | `received` |
| outgoing, is_ai_generated true | `sent_via_ai` |
| outgoing, otherwise | `sent_by_human` |
| anything else | `unknown` (the row is kept and counted, its phones left empty) |

The workbook rows and the `stats` counts both use this module, so they never disagree.
"""

from __future__ import annotations

STATUS_RECEIVED = "received"
STATUS_SENT_VIA_AI = "sent_via_ai"
STATUS_SENT_BY_HUMAN = "sent_by_human"
STATUS_UNKNOWN = "unknown"
STATUSES = (STATUS_RECEIVED, STATUS_SENT_VIA_AI, STATUS_SENT_BY_HUMAN)

# Spellings seen from different platform writers; anything else is "unknown".
INCOMING_DIRECTIONS = frozenset({"incoming", "inbound", "in", "received"})
OUTGOING_DIRECTIONS = frozenset({"outgoing", "outbound", "out", "sent"})


def normalized_direction(value: object) -> str | None:
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in INCOMING_DIRECTIONS:
            return "incoming"
        if lowered in OUTGOING_DIRECTIONS:
            return "outgoing"
    return None


def status_of(direction: object, is_ai_generated: object) -> str:
    """The Status of one message (see the table above); called once per exported row."""
    if direction != "incoming" and direction != "outgoing":  # the exact spellings skip the normalising
        direction = normalized_direction(direction)
    if direction == "incoming":
        return STATUS_RECEIVED
    if direction == "outgoing":
        return STATUS_SENT_VIA_AI if is_ai_generated is True else STATUS_SENT_BY_HUMAN
    return STATUS_UNKNOWN
