"""What a job page tells whom: a job's history carries provider error text, remote ids and
delivery exceptions (written for the operator), so members and tenant admins see each event's
time and status, and its note only when it is one of the plain notes below. Anything else (an
unknown or new note included) is for the operator alone: a new note is hidden until listed here.
"""
from __future__ import annotations

import re
from typing import Any

from bot.core.grants import Grant

#: Notes the core writes that name nothing outside the tenant (no provider, remote id or error text).
_PLAIN = re.compile(
    r"(?:deleted|cancelled) by [\w.@-]+"
    r"|scene \d+ of \d+: job \w+(?: \(attempt \d+\))?"
    r"|joined \d+ scenes"
    r"|story \w+ cancelled"
    r"|image step (?:done by [\w.-]+|reused after restart)"
    r"|image reused after restart"
    r"|moderation unavailable; went on"
    r"|media removed after [\d.]+ days \(retention\)"
)


def timeline(events: list[Any], grant: Grant) -> list[dict[str, Any]]:
    """The events as this grant may read them."""
    if grant.operator:
        return [dict(e) for e in events]
    return [{**e, "detail": e["detail"] if e.get("detail") and _PLAIN.fullmatch(e["detail"]) else None} for e in events]
