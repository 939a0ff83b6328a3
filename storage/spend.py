"""Spending as the store counts it, and the check that reserves a job's estimate.

A job counts against the UTC day it was created on: at its estimate while it runs (the
money is as good as spent), at its actual cost once finished. A failed or cancelled job
counts what the provider billed, plus an image step that was already paid for; one that
never reached a provider counts nothing, so its reservation is released by its ending.
A story's scenes and a set's takes count nothing of their own: the story (set) row reserved them
all at once and settles to their sum (its cost_actual), so nothing is counted twice.

The check runs inside the write that creates (or re-prices) the job, in one `BEGIN
IMMEDIATE` transaction, so two processes cannot both spend the last dollar.

COST_SQL below is SQLite's expression of these rules; the PostgreSQL store has its own
(`storage.pg.spend`, jsonb operators). Both are checked against each other by the tests.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from storage.models import TERMINAL, JobStatus

COST_SQL = """
CASE
  WHEN json_extract(state_json, '$.story_scene') IS NOT NULL OR json_extract(state_json, '$.take') IS NOT NULL THEN 0
  WHEN status IN ('failed', 'cancelled')
    THEN COALESCE(cost_actual, json_extract(state_json, '$.image_step_cost'), 0)
  WHEN status = 'completed' THEN COALESCE(cost_actual, cost_estimate, 0)
  ELSE COALESCE(cost_estimate, 0)
END
"""


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


class OverBudget(Exception):
    def __init__(self, limit: SpendLimit, spent: float, cost: float) -> None:
        super().__init__(f"{limit.whose} budget: spent {spent:.4f} + {cost:.4f} > {limit.limit:.4f}")
        self.limit = limit
        self.spent = spent
        self.cost = cost


def spent_query(
    platform: str, since: float, *, user_id: str | None = None, workspace_id: str | None = None, excluding: str | None = None
) -> tuple[str, list[object]]:
    """SQLite: the sum of COST_SQL over the jobs a limit (or a report) counts."""
    sql = f"SELECT COALESCE(SUM({COST_SQL}), 0) FROM jobs WHERE created_at >= ? AND platform = ?"
    args: list[object] = [since, platform]
    if user_id is not None:
        sql += " AND user_id = ?"
        args.append(user_id)
    if workspace_id is not None:
        sql += " AND workspace_id = ?"
        args.append(workspace_id)
    if excluding is not None:
        sql += " AND id != ?"
        args.append(excluding)
    return sql, args


def spent(conn: sqlite3.Connection, limit: SpendLimit, *, excluding: str | None = None) -> float:
    sql, args = spent_query(limit.platform, limit.since, user_id=limit.user_id, workspace_id=limit.workspace_id, excluding=excluding)
    row = conn.execute(sql, args).fetchone()
    return round(float(row[0]) if row else 0.0, 6)


def check(conn: sqlite3.Connection, limits: list[SpendLimit], cost: float, *, excluding: str | None = None) -> None:
    """Raise OverBudget if `cost` more would pass any limit (run inside the writing transaction)."""
    for limit in limits:
        already = spent(conn, limit, excluding=excluding)
        if already + cost > limit.limit + 1e-9:
            raise OverBudget(limit, already, cost)


@dataclass(frozen=True)
class QueueLimit:
    """At most `limit` unfinished jobs (queued or running) per user, checked in the insert."""

    platform: str
    user_id: str
    limit: int


class QueueFull(Exception):
    def __init__(self, limit: QueueLimit, pending: int) -> None:
        super().__init__(f"{pending} unfinished jobs (limit {limit.limit})")
        self.limit = limit
        self.pending = pending


#: Statuses that count against the queue limit (not finished).
UNFINISHED = tuple(s.value for s in JobStatus if s not in TERMINAL)


def check_queue(conn: sqlite3.Connection, limit: QueueLimit) -> None:
    """Raise QueueFull when the user already has `limit` unfinished jobs (inside the insert's transaction,
    so the check costs the submitter no read of its own and holds across processes)."""
    marks = ", ".join("?" for _ in UNFINISHED)
    row = conn.execute(
        # A set's takes are part of their set's one request: only the set counts.
        f"SELECT COUNT(*) FROM jobs WHERE platform = ? AND user_id = ? AND status IN ({marks}) AND json_extract(state_json, '$.take') IS NULL",
        (limit.platform, limit.user_id, *UNFINISHED),
    ).fetchone()
    pending = int(row[0]) if row else 0
    if pending >= limit.limit:
        raise QueueFull(limit, pending)


def pending_answer(
    *, row_platform: str, row_user: str, state: str, expires_at: float, platform: str, user_id: str, to: str, now: float
) -> tuple[str, str | None]:
    """How a request to move a pending spend to `to` is answered: (the state it reports, the state
    to write or None). Both stores run this on the row they locked, so the rule is written once."""
    if row_platform != platform:
        return "missing", None
    if row_user != user_id:
        return "not_owner", None
    if state == "pending":
        return ("expired", "expired") if expires_at < now else ("pending", to)
    return state, None

