"""The spend gate (and the queue limit) on PostgreSQL: storage.spend's rules as a jsonb
expression, serialised per scope.

Every limit is a scope (one user's or one workspace's spending on a platform). Before a
job is inserted (or re-priced) the writing transaction takes a transaction-scoped advisory
lock per scope, in a fixed order (so two writers with two scopes each cannot deadlock), then
sums and checks. Under READ COMMITTED each statement sees what the previous holder
committed, so two processes cannot both spend the last dollar; writes for other scopes never
wait. The locks go with the transaction.
"""
from __future__ import annotations

import re

import asyncpg

from storage.pg.locks import SPEND_NAMESPACE
from storage.spend import UNFINISHED, OverBudget, QueueFull, QueueLimit, SpendLimit

COST_SQL = """
CASE
  WHEN (state_json ->> 'story_scene') IS NOT NULL OR (state_json ->> 'take') IS NOT NULL THEN 0
  WHEN status IN ('failed', 'cancelled')
    THEN COALESCE(cost_actual, (state_json ->> 'image_step_cost')::double precision, 0)
  WHEN status = 'completed' THEN COALESCE(cost_actual, cost_estimate, 0)
  ELSE COALESCE(cost_estimate, 0)
END
"""


def spent_query(
    platform: str, since: float, *, user_id: str | None = None, workspace_id: str | None = None, excluding: str | None = None
) -> tuple[str, list[object]]:
    sql = f"SELECT COALESCE(SUM({COST_SQL}), 0) FROM jobs WHERE created_at >= $1 AND platform = $2"
    args: list[object] = [since, platform]
    if user_id is not None:
        args.append(user_id)
        sql += f" AND user_id = ${len(args)}"
    if workspace_id is not None:
        args.append(workspace_id)
        sql += f" AND workspace_id = ${len(args)}"
    if excluding is not None:
        args.append(excluding)
        sql += f" AND id != ${len(args)}"
    return sql, args


def scope(limit: SpendLimit) -> str:
    return f"{limit.platform}\x1f{limit.user_id or ''}\x1f{limit.workspace_id or ''}"


def queue_scope(limit: QueueLimit) -> str:
    return f"queue\x1f{limit.platform}\x1f{limit.user_id}"


async def check(
    conn: asyncpg.Connection, limits: list[SpendLimit], cost: float, *, excluding: str | None = None,
    queue: QueueLimit | None = None,
) -> None:
    """Raise QueueFull if the user already has `queue.limit` unfinished jobs, OverBudget if `cost`
    more would pass any limit. Call inside the writing transaction, before the write.

    Two statements whatever the number of limits: the locks (in sorted order, one statement:
    unnest keeps the array's order), then every count and sum at once. They cannot be one:
    a statement's snapshot is taken before its locks are granted."""
    names = {scope(limit) for limit in limits}
    if queue is not None:
        names.add(queue_scope(queue))
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext(name)) FROM unnest($2::text[]) AS name", SPEND_NAMESPACE, sorted(names)
    )
    parts: list[str] = []
    args: list[object] = []
    if queue is not None:
        args += [queue.platform, queue.user_id, list(UNFINISHED)]
        # A set's takes are part of their set's one request: only the set counts.
        parts.append(
            "(SELECT COUNT(*) FROM jobs WHERE platform = $1 AND user_id = $2 AND status = ANY($3::text[]) AND (state_json ->> 'take') IS NULL)"
        )
    for limit in limits:
        sql, limit_args = spent_query(
            limit.platform, limit.since, user_id=limit.user_id, workspace_id=limit.workspace_id, excluding=excluding
        )
        # Renumber this query's $n after those already taken.
        offset = len(args)
        sql = re.sub(r"\$(\d+)", lambda m: f"${int(m.group(1)) + offset}", sql)
        args += limit_args
        parts.append(f"({sql})")
    row = await conn.fetchrow(f"SELECT {', '.join(parts)}", *args)
    assert row is not None
    values = list(row.values())
    if queue is not None:
        pending = int(values.pop(0))
        if pending >= queue.limit:
            raise QueueFull(queue, pending)
    for limit, total in zip(limits, values):
        already = round(float(total), 6)
        if already + cost > limit.limit + 1e-9:
            raise OverBudget(limit, already, cost)
