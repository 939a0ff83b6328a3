"""Spending as the store counts it, and the check that reserves a job's estimate.

A job counts against the UTC day it was created on: at its estimate while it runs (the
money is as good as spent), at its actual cost once finished. A failed or cancelled job
counts what the provider billed, plus an image step that was already paid for; one that
never reached a provider counts nothing, so its reservation is released by its ending.
A story's scenes count nothing of their own: the story row reserved them all at once and
settles to their sum (its cost_actual), so nothing is counted twice.

The check runs inside the write that creates (or re-prices) the job, in one transaction:
on SQLite a `BEGIN IMMEDIATE` one, on PostgreSQL under a transaction-scoped advisory lock
per scope (`scope`, `queue_scope`), so two processes cannot both spend the last dollar.
COST_SQL reads columns only (story_scene and image_step_cost are columns), so it is one
expression for both dialects; `cost_of` is the same rule in Python.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.errors import OverBudget, QueueFull
from storage.models import TERMINAL, JobStatus
from storage.sql import Dialect, Script, Stmt

__all__ = [
    "COST_SQL", "OverBudget", "QueueFull", "QueueLimit", "SpendLimit", "UNFINISHED", "check", "cost_of", "pending_answer",
    "queue_scope", "scope", "spent_query",
]  # fmt: skip

COST_SQL = """
CASE
  WHEN story_scene IS NOT NULL OR take IS NOT NULL THEN 0
  WHEN status IN ('failed', 'cancelled') THEN COALESCE(cost_actual, image_step_cost, 0)
  WHEN status = 'completed' THEN COALESCE(cost_actual, cost_estimate, 0)
  ELSE COALESCE(cost_estimate, 0)
END
"""


def cost_of(row: dict[str, Any]) -> float:
    """COST_SQL for one job row (as `storage.rows` builds it)."""
    if row.get("story_scene") is not None or row.get("take") is not None:
        return 0.0
    status = row["status"]
    if status in ("failed", "cancelled"):
        value = row.get("cost_actual") if row.get("cost_actual") is not None else row.get("image_step_cost")
    elif status == "completed":
        value = row.get("cost_actual") if row.get("cost_actual") is not None else row.get("cost_estimate")
    else:
        value = row.get("cost_estimate")
    return float(value or 0.0)


@dataclass(frozen=True)
class SpendLimit:
    """At most `limit` USD since `since` for the jobs of one user or one workspace."""

    platform: str
    limit: float
    since: float
    #: Who the limit is for, in the refusal ("your", "this workspace's").
    whose: str
    user_id: str | None = None
    workspace_id: str | None = None

    def counts(self, row: dict[str, Any]) -> bool:
        """Whether a job row falls in this limit's scope."""
        return (
            row["created_at"] >= self.since and row["platform"] == self.platform
            and (self.user_id is None or row["user_id"] == self.user_id)
            and (self.workspace_id is None or row["workspace_id"] == self.workspace_id)
        )  # fmt: skip


@dataclass(frozen=True)
class QueueLimit:
    """At most `limit` unfinished jobs (queued or running) per user, checked in the insert."""

    platform: str
    user_id: str
    limit: int


#: Statuses that count against the queue limit (not finished).
UNFINISHED = tuple(s.value for s in JobStatus if s not in TERMINAL)


def spent_query(
    platform: str, since: float, *, user_id: str | None = None, workspace_id: str | None = None, excluding: str | None = None
) -> tuple[str, list[Any]]:
    """The sum of COST_SQL over the jobs a limit (or a report) counts (`?` placeholders)."""
    sql = f"SELECT COALESCE(SUM({COST_SQL}), 0) FROM jobs WHERE created_at >= ? AND platform = ?"
    args: list[Any] = [since, platform]
    for column, value in (("user_id", user_id), ("workspace_id", workspace_id)):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    if excluding is not None:
        sql += " AND id <> ?"
        args.append(excluding)
    return sql, args


def queue_query(d: Dialect, limit: QueueLimit) -> tuple[str, list[Any]]:
    unfinished, args = d.any("status", UNFINISHED)
    # A set's takes are part of their set's one request: only the set counts.
    return f"SELECT COUNT(*) FROM jobs WHERE platform = ? AND user_id = ? AND {unfinished} AND take IS NULL", [limit.platform, limit.user_id, *args]


def scope(limit: SpendLimit) -> str:
    return f"{limit.platform}\x1f{limit.user_id or ''}\x1f{limit.workspace_id or ''}"


def queue_scope(limit: QueueLimit) -> str:
    return f"queue\x1f{limit.platform}\x1f{limit.user_id}"


def locks(limits: list[SpendLimit] | None, queue: QueueLimit | None = None) -> frozenset[str]:
    """The advisory locks a gated write takes (PostgreSQL): one per scope."""
    return frozenset([scope(limit) for limit in limits or []] + ([queue_scope(queue)] if queue is not None else []))


def check(
    d: Dialect, limits: list[SpendLimit], cost: float, *, excluding: str | None = None, queue: QueueLimit | None = None
) -> Script[None]:
    """Raise QueueFull if the user already has `queue.limit` unfinished jobs, OverBudget if `cost`
    more would pass any limit. Part of the writing script, before its write; one statement
    whatever the number of limits (every count and sum at once)."""
    parts: list[str] = []
    args: list[Any] = []
    if queue is not None:
        sql, more = queue_query(d, queue)
        parts.append(f"({sql}) AS q")
        args += more
    for i, limit in enumerate(limits):
        sql, more = spent_query(limit.platform, limit.since, user_id=limit.user_id, workspace_id=limit.workspace_id, excluding=excluding)
        parts.append(f"({sql}) AS s{i}")
        args += more
    if not parts:
        return
    rows = yield Stmt(f"SELECT {', '.join(parts)}", args)
    row = rows[0]
    if queue is not None and int(row["q"]) >= queue.limit:
        raise QueueFull(queue, int(row["q"]))
    for i, limit in enumerate(limits):
        already = round(float(row[f"s{i}"]), 6)
        if already + cost > limit.limit + 1e-9:
            raise OverBudget(limit, already, cost)


def pending_answer(
    *, row_platform: str, row_user: str, state: str, expires_at: float, platform: str, user_id: str, to: str, now: float
) -> tuple[str, str | None]:
    """How a request to move a pending spend to `to` is answered: (the state it reports, the state
    to write or None)."""
    if row_platform != platform:
        return "missing", None
    if row_user != user_id:
        return "not_owner", None
    if state == "pending":
        return ("expired", "expired") if expires_at < now else ("pending", to)
    return state, None
