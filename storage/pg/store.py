"""The job store on PostgreSQL: the same contract as the SQLite `JobStore`, for several
processes on several machines sharing one database.

- A connection pool (asyncpg). Every write is one transaction on a pooled connection, run as
  a task the caller's cancellation does not cut short (as SQLite's writer: a write, once
  started, is carried out; `close()` waits for writes under way).
- Fenced writes are conditional UPDATEs (`lease_owner = $fence AND status NOT IN terminal`);
  when nothing matched, the row says why (LeaseLost / AlreadyFinished / KeyError).
- The spend gate runs inside the inserting transaction under per-scope advisory locks
  (storage.pg.spend).
- `claim_queued`: one transaction. A transaction-scoped advisory lock (locks.CLAIM) makes
  concurrent claimers take turns, so the counts behind the global and per-user caps are
  those the previous claimer committed (READ COMMITTED reads a fresh snapshot per statement)
  and the caps hold across all workers. The chosen rows are then locked `FOR UPDATE SKIP
  LOCKED`: a row another transaction is writing (a cancel) is passed over, not waited for,
  and the pick is made again without it.
- Signals: `publish` inserts into job_signals and `NOTIFY videobot_jobs, '<id>'` in one
  transaction, under an advisory lock (locks.SIGNALS) so ids commit in id order and a
  reader's cursor never passes a signal still uncommitted. `wait_for_signal` listens on a
  dedicated connection (storage.pg.listener) that reconnects when dropped; the reader
  catches up by id (`signals_after`), so a NOTIFY lost while disconnected loses nothing.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from storage.claims import Candidate, fair_order, fair_pick, user_key
from storage.gallery import GalleryQuery
from storage.jobs import (
    ORIGIN_COLUMNS, PLAIN_COLUMNS, UPDATABLE, AlreadyFinished, JobEvent, LeaseLost,
)  # fmt: skip
from storage.leases import HolderState, holder_state
from storage.models import (
    TERMINAL, GenerateParams, Job, JobKind, JobOutcome, JobStatus, LeaseHolder, Origin, PendingSpend, QueueStats, RemoteRef,
    Signal, Spender, WorkerRow,
)
from storage.pg import gallery as pg_gallery
from storage.pg import spend
from storage.pg.listener import Listener
from storage.pg.locks import CLAIM, NAMESPACE, SIGNALS
from storage.pg.schema import migrate
from storage.spend import QueueLimit, SpendLimit, pending_answer
from storage.writer import StoreClosed

log = logging.getLogger(__name__)
T = TypeVar("T")
CHANNEL = "videobot_jobs"
_TERMINAL = [s.value for s in TERMINAL]
#: Retried a few times: PostgreSQL undoes the whole transaction, so running it again is safe.
_RETRYABLE = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb in and out as Python values (dict, list, str, numbers, bool, None).
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """On the way back to the pool. Without this hook asyncpg sends a reset query (UNLISTEN,
    unlock, RESET ALL) every time: one more round trip per write. Pooled connections here keep
    no session state (transaction-scoped locks only, LISTEN on its own connection, no SET); with
    a hook, asyncpg still rolls back a transaction a cancelled caller left open."""
    return None


def split_url(url: str) -> tuple[str, dict[str, int]]:
    """Our own options out of the URL (asyncpg would send unknown ones to the server as settings)."""
    parts = urlsplit(url)
    ours, theirs = {}, []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in ("pool_min", "pool_max"):
            ours[key] = int(value)
        else:
            theirs.append((key, value))
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


class PgJobStore:
    backend = "postgresql"

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self._dsn = dsn
        self._closed = False
        self._outstanding: set[asyncio.Task[Any]] = set()
        self._listener = Listener(dsn, CHANNEL, init=_init_connection)

    @classmethod
    async def open(cls, url: str, *, pool_min: int = 1, pool_max: int = 10) -> PgJobStore:
        dsn, options = split_url(url)
        conn = await asyncpg.connect(dsn)
        try:
            await migrate(conn, _redacted(dsn))
        finally:
            await conn.close()
        pool = await asyncpg.create_pool(
            dsn, min_size=options.get("pool_min", pool_min), max_size=options.get("pool_max", pool_max),
            init=_init_connection, reset=_reset_connection,
        )  # fmt: skip
        return cls(pool, dsn)

    async def close(self) -> None:
        """Let writes under way commit, then close the pool and the listener. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while self._outstanding:
            await asyncio.gather(*list(self._outstanding), return_exceptions=True)
        await self._listener.close()
        await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    # --- plumbing ---------------------------------------------------------------------------

    async def _write(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, transaction: bool = True) -> T:
        """Run `fn` in one transaction; once started it finishes even if the caller is cancelled.

        `transaction=False` for a write that is one statement (atomic by itself): it saves the
        BEGIN and COMMIT round trips, which is most of the cost of the runner's many small writes."""
        if self._closed:
            raise StoreClosed("the job store is closed")

        async def run() -> T:
            for attempt in range(5):
                try:
                    async with self._pool.acquire() as conn:
                        if not transaction:
                            return await fn(conn)
                        async with conn.transaction():
                            return await fn(conn)
                except _RETRYABLE:
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.01 * (attempt + 1))
            raise AssertionError("unreachable")

        task = asyncio.create_task(run())
        self._outstanding.add(task)
        task.add_done_callback(self._outstanding.discard)
        return await asyncio.shield(task)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        if self._closed:
            raise StoreClosed("the job store is closed")
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(sql, *args))

    async def _select(self, tail: str, *args: Any) -> list[Job]:
        return [_from_record(r) for r in await self._fetch(f"SELECT * FROM jobs {tail}", *args)]

    # --- writes -------------------------------------------------------------------------------

    async def create(
        self, job: Job, *, lease_owner: str | None = None, lease_seconds: float | None = None,
        spend_limits: list[SpendLimit] | None = None, queue_limit: QueueLimit | None = None,
    ) -> Job:
        row = _to_row(job)
        if lease_owner is not None:
            row["lease_owner"] = lease_owner
            row["lease_until"] = time.time() + (lease_seconds or 60.0)
        cols = ", ".join(row)
        marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
        n = len(row)
        # The row and its first event in one statement.
        sql = (
            f"WITH j AS (INSERT INTO jobs ({cols}) VALUES ({marks}) RETURNING id, status, progress, created_at) "
            f"INSERT INTO job_events (job_id, at, status, progress, detail, runner) "
            f"SELECT id, created_at, status, progress, NULL, ${n + 1} FROM j"
        )
        gated = bool(spend_limits) or queue_limit is not None

        async def write(conn: asyncpg.Connection) -> None:
            if gated:
                await spend.check(conn, spend_limits or [], job.cost_estimate or 0.0, queue=queue_limit)
            await conn.execute(sql, *row.values(), lease_owner)

        await self._write(write, transaction=gated)
        return job.model_copy(update={"lease_owner": row.get("lease_owner"), "lease_until": row.get("lease_until")})

    async def update(
        self, job_id: str, *, detail: str | None = None, fence: str | None = None,
        spend_limits: list[SpendLimit] | None = None, by: str | None = None, **fields: Any,
    ) -> Job:
        now = time.time()
        args: list[Any] = [now]
        sets = ["updated_at = $1"]
        for key, value in fields.items():
            if key == "state":
                args.append(value)
                sets.append(f"state_json = ${len(args)}::jsonb")
            elif key == "origin_extra":
                args.append(value)
                sets.append(f"origin_json = jsonb_set(origin_json, '{{extra}}', ${len(args)}::jsonb)")
            elif key == "params":
                args.append(value.model_dump(mode="json"))
                sets.append(f"params_json = ${len(args)}::jsonb")
            elif key in UPDATABLE:
                args.append(value.value if isinstance(value, (JobStatus, JobKind)) else value)
                sets.append(f"{key} = ${len(args)}")
            else:
                raise KeyError(f"not an updatable job field: {key}")
        status = fields.get("status")
        args.append(job_id)
        where = f"id = ${len(args)}"
        if fence is not None:
            args.append(fence)
            where += f" AND lease_owner = ${len(args)}"
        if status is not None or fence is not None:
            args.append(_TERMINAL)
            where += f" AND status <> ALL(${len(args)}::text[])"
        sql = f"UPDATE jobs SET {', '.join(sets)} WHERE {where} RETURNING *"
        if status is not None or detail is not None:
            # The row and its event in one statement: the event reads the status the update left.
            args += [detail, by or fence]
            sql = (
                f"WITH u AS ({sql}), e AS (INSERT INTO job_events (job_id, at, status, progress, detail, runner) "
                f"SELECT id, $1, status, progress, ${len(args) - 1}, ${len(args)} FROM u) SELECT * FROM u"
            )
        gated = bool(spend_limits) and fields.get("cost_estimate") is not None

        async def write(conn: asyncpg.Connection) -> Job:
            if gated:
                await spend.check(conn, spend_limits or [], float(fields["cost_estimate"]), excluding=job_id)
            stored = await conn.fetchrow(sql, *args)
            if stored is None:
                await _explain_refusal(conn, job_id, fence)
            assert stored is not None
            return _from_record(stored)

        return await self._write(write, transaction=gated)

    async def add_event(self, job_id: str, detail: str, *, by: str | None = None) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO job_events (job_id, at, status, progress, detail, runner) "
                "SELECT id, $2, status, progress, $3, $4 FROM jobs WHERE id = $1",
                job_id, time.time(), detail, by,
            )  # fmt: skip

        await self._write(write, transaction=False)

    async def set_progress(self, job_id: str, progress: int, *, fence: str | None = None, by: str | None = None) -> None:
        # Progress ticks are not history: no event row (`by` is accepted for symmetry).
        sql = "UPDATE jobs SET progress = $1, updated_at = $2 WHERE id = $3"
        args: list[Any] = [progress, time.time(), job_id]
        if fence is not None:
            sql += " AND lease_owner = $4 AND status <> ALL($5::text[])"
            args += [fence, _TERMINAL]

        async def write(conn: asyncpg.Connection) -> None:
            if await conn.execute(sql, *args) == "UPDATE 0":
                await _explain_refusal(conn, job_id, fence)

        await self._write(write, transaction=False)

    async def reopen_delivery(self, job_id: str, detail: str, *, by: str | None = None) -> Job:
        async def write(conn: asyncpg.Connection) -> Job:
            now = time.time()
            stored = await conn.fetchrow(
                "UPDATE jobs SET status = $1, error_code = NULL, error_message = NULL, finished_at = NULL, updated_at = $2 "
                "WHERE id = $3 AND status = $4 AND error_code = 'undelivered' AND output_path IS NOT NULL RETURNING *",
                JobStatus.DELIVERING.value, now, job_id, JobStatus.COMPLETED.value,
            )  # fmt: skip
            if stored is None:
                raise AlreadyFinished(job_id, "not a completed job waiting for delivery")
            await _event(conn, job_id, JobStatus.DELIVERING, 100, detail, now, by)
            return _from_record(stored)

        return await self._write(write)

    # --- leases ---------------------------------------------------------------------------------

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            # The row lock makes read-then-set one step: two runners cannot both take it.
            row = await conn.fetchrow("SELECT status, lease_owner, lease_until FROM jobs WHERE id = $1 FOR UPDATE", job_id)
            if row is None or JobStatus(row["status"]) in TERMINAL:
                return False
            current = row["lease_owner"]
            state = holder_state(current, row["lease_until"])
            if current is not None and current != owner and state is HolderState.ALIVE:
                return False
            await conn.execute(
                "UPDATE jobs SET lease_owner = $1, lease_until = $2 WHERE id = $3", owner, time.time() + lease_seconds, job_id
            )
            if current is not None and current != owner:
                log.info("job %s: took over the lease from %s (%s)", job_id, current, state)
            return True

        return await self._write(write)

    async def renew(self, owner: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        if not job_ids:
            return set()
        ids = list(job_ids)

        async def write(conn: asyncpg.Connection) -> set[str]:
            rows = await conn.fetch(
                "UPDATE jobs SET lease_until = $1 WHERE lease_owner = $2 AND id = ANY($3::text[]) RETURNING id",
                time.time() + lease_seconds, owner, ids,
            )  # fmt: skip
            return {r["id"] for r in rows}

        return await self._write(write, transaction=False)

    async def release(self, owner: str, job_ids: Sequence[str] | None = None) -> None:
        ids = None if job_ids is None else list(job_ids)
        if ids == []:
            return

        async def write(conn: asyncpg.Connection) -> None:
            if ids is None:
                await conn.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1", owner)
            else:
                await conn.execute(
                    "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1 AND id = ANY($2::text[])",
                    owner, ids,
                )  # fmt: skip

        await self._write(write, transaction=False)

    async def claim_queued(
        self, owner: str, lease_seconds: float, *, platforms: Collection[str] | None, max_running: int,
        max_running_per_user: int, limit: int,
    ) -> list[Job]:
        names = None if platforms is None else list(platforms)
        if names == [] or limit <= 0:
            return []

        free = (
            "status = 'queued' AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= $2) AND id <> ALL($4::text[])"
        )
        only: list[Any] = []
        if names is not None:
            only.append(names)
            free += " AND platform = ANY($5::text[])"
        # One read for both: what every user has taken (live leases, any runner), and each user's
        # oldest waiting jobs (only the first max_running_per_user of a user can be picked).
        read = (
            "SELECT 'taken' AS kind, NULL AS id, platform, workspace_id, user_id, COUNT(*)::float8 AS x, 0::bigint AS seq "
            "FROM jobs WHERE status <> ALL($1::text[]) AND lease_owner IS NOT NULL AND lease_until > $2 "
            "GROUP BY platform, workspace_id, user_id "
            "UNION ALL SELECT 'queued', id, platform, workspace_id, user_id, created_at, seq FROM ("
            "SELECT id, platform, workspace_id, user_id, created_at, seq, ROW_NUMBER() OVER "
            "(PARTITION BY platform, workspace_id, user_id ORDER BY created_at, seq) AS rank "
            f"FROM jobs WHERE {free}) c WHERE rank <= $3 ORDER BY kind, x, seq"
        )
        take = (
            "UPDATE jobs SET lease_owner = $1, lease_until = $2 WHERE id IN (SELECT id FROM jobs WHERE id = ANY($3::text[]) "
            "AND status = 'queued' AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= $4) "
            "FOR UPDATE SKIP LOCKED) RETURNING *"
        )

        async def write(conn: asyncpg.Connection) -> list[Job]:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", NAMESPACE, CLAIM)
            now = time.time()
            claimed: list[Job] = []
            passed: list[str] = []
            for _ in range(4):
                taken: dict[str, int] = {}
                candidates: list[Candidate] = []
                # A user's k-th waiting job can be picked only after their first k-1: at most `limit` each.
                depth = min(max_running_per_user, limit - len(claimed))
                for r in await conn.fetch(read, _TERMINAL, now, depth, passed, *only):
                    key = user_key(r["platform"], r["workspace_id"], r["user_id"])
                    if r["kind"] == "taken":
                        taken[key] = int(r["x"])
                    else:
                        candidates.append(Candidate(r["id"], key, r["x"]))
                chosen = fair_pick(
                    candidates, taken, taken_total=sum(taken.values()), max_running=max_running,
                    max_running_per_user=max_running_per_user, limit=limit - len(claimed),
                )  # fmt: skip
                if not chosen:
                    break
                got = {r["id"]: _from_record(r) for r in await conn.fetch(take, owner, now + lease_seconds, chosen, now)}
                claimed += [got[job_id] for job_id in chosen if job_id in got]
                if len(got) == len(chosen):
                    break
                # Rows another transaction is writing (a cancel) were passed over, not waited for: read and
                # pick again without them (what we just leased now counts as taken).
                passed += [job_id for job_id in chosen if job_id not in got]
            return claimed

        return await self._write(write)

    # --- reads ----------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        jobs = await self._select("WHERE id = $1", job_id)
        return jobs[0] if jobs else None

    async def find_prefix(
        self, prefix: str, limit: int = 2, *, platform: str | None = None, workspace_id: str | None = None, scoped: bool = False
    ) -> list[Job]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if not scoped:
            return await self._select("WHERE id LIKE $1 ESCAPE '\\' ORDER BY seq LIMIT $2", escaped, limit)
        return await self._select(
            "WHERE id LIKE $1 ESCAPE '\\' AND platform = $2 AND workspace_id IS NOT DISTINCT FROM $3 ORDER BY seq LIMIT $4",
            escaped, platform, workspace_id, limit,
        )  # fmt: skip

    async def list(
        self, *, platform: str | None = None, user_id: str | None = None, statuses: Iterable[JobStatus] | None = None,
        include_deleted: bool = False, limit: int = 20,
    ) -> list[Job]:
        where: list[str] = []
        args: list[Any] = []
        if platform is not None:
            args.append(platform)
            where.append(f"platform = ${len(args)}")
        if user_id is not None:
            args.append(user_id)
            where.append(f"user_id = ${len(args)}")
        if statuses is not None:
            args.append([s.value for s in statuses])
            where.append(f"status = ANY(${len(args)}::text[])")
        if not include_deleted:
            where.append("deleted_at IS NULL")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        args.append(limit)
        return await self._select(f"{clause} ORDER BY created_at DESC, seq DESC LIMIT ${len(args)}", *args)

    async def unfinished(self, platforms: Iterable[str] | None = None) -> list[Job]:
        if platforms is None:
            return await self._select("WHERE status <> ALL($1::text[]) ORDER BY created_at, seq", _TERMINAL)
        return await self._select(
            "WHERE status <> ALL($1::text[]) AND platform = ANY($2::text[]) ORDER BY created_at, seq", _TERMINAL, list(platforms)
        )

    async def find_by_message(self, platform: str, message_id: str) -> Job | None:
        jobs = await self._select(
            "WHERE platform = $1 AND (status_message_id = $2 OR result_message_id = $2) ORDER BY created_at DESC LIMIT 1",
            platform, message_id,
        )  # fmt: skip
        return jobs[0] if jobs else None

    async def with_status(self, job_ids: Sequence[str], status: JobStatus) -> list[Job]:
        if not job_ids:
            return []
        return await self._select("WHERE status = $1 AND id = ANY($2::text[]) ORDER BY seq", status.value, list(job_ids))

    async def media_to_expire(self, finished_before: float, limit: int = 500) -> list[Job]:
        return await self._select(
            "WHERE status = ANY($1::text[]) AND finished_at < $2 AND media_expired_at IS NULL AND deleted_at IS NULL "
            "ORDER BY finished_at LIMIT $3",
            _TERMINAL, finished_before, limit,
        )  # fmt: skip

    async def remote_ids_since(self, since: float, *, excluding: str) -> list[str]:
        rows = await self._fetch(
            "SELECT remote_id, state_json -> 'failed_remote_ids' AS failed FROM jobs WHERE created_at >= $1 AND id <> $2 "
            "AND (remote_id IS NOT NULL OR state_json ? 'failed_remote_ids') ORDER BY seq",
            since, excluding,
        )  # fmt: skip
        ids = [r["remote_id"] for r in rows if r["remote_id"] is not None]
        for r in rows:
            if isinstance(r["failed"], list):
                ids.extend(r["failed"])
        return ids

    # --- the web gallery (storage.gallery's contract; storage.pg.gallery) -------------------------

    async def gallery(self, query: GalleryQuery) -> list[Job]:
        tail, args = pg_gallery.page_sql(query)
        return await self._select(tail, *args)

    async def gallery_facets(self, query: GalleryQuery) -> dict[str, list[tuple[str, str | None]]]:
        found: dict[str, list[tuple[str, str | None]]] = {}
        for name, (sql, args) in pg_gallery.facets_sql(query).items():
            found[name] = [(r[0], r[1] if len(r) > 1 else None) for r in await self._fetch(sql, *args)]
        return found

    async def children(self, job_id: str) -> list[Job]:
        return await self._select("WHERE parent_id = $1 ORDER BY created_at, seq", job_id)

    async def events(self, job_id: str) -> list[JobEvent]:
        rows = await self._fetch("SELECT at, status, progress, detail, runner FROM job_events WHERE job_id = $1 ORDER BY id", job_id)
        return [JobEvent(dict(r)) for r in rows]

    async def count(self, *, statuses: Iterable[JobStatus], platform: str | None = None, user_id: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM jobs WHERE status = ANY($1::text[])"
        args: list[Any] = [[s.value for s in statuses]]
        if platform is not None:
            sql += " AND platform = $2 AND user_id = $3"
            args += [platform, user_id]
        rows = await self._fetch(sql, *args)
        return int(rows[0][0])

    # --- settings and confirmations ---------------------------------------------------------------

    async def settings_rows(self, platform: str, workspace_id: str | None) -> list[tuple[str, str, str, Any]]:
        rows = await self._fetch(
            "SELECT scope, scope_id, key, value_json FROM settings WHERE platform = $1 AND workspace_id = $2",
            platform, workspace_id or "",
        )  # fmt: skip
        return [(r["scope"], r["scope_id"], r["key"], r["value_json"]) for r in rows]

    async def put_setting(
        self, platform: str, workspace_id: str | None, scope: str, scope_id: str, key: str, value: Any, *, by: str
    ) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            if value is None:
                await conn.execute(
                    "DELETE FROM settings WHERE platform = $1 AND workspace_id = $2 AND scope = $3 AND scope_id = $4 AND key = $5",
                    platform, workspace_id or "", scope, scope_id, key,
                )  # fmt: skip
                return
            await conn.execute(
                "INSERT INTO settings (platform, workspace_id, scope, scope_id, key, value_json, updated_by, updated_at) "
                "VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8) ON CONFLICT (platform, workspace_id, scope, scope_id, key) "
                "DO UPDATE SET value_json = excluded.value_json, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                platform, workspace_id or "", scope, scope_id, key, value, by, time.time(),
            )  # fmt: skip

        await self._write(write, transaction=False)

    async def put_pending(self, token: str, job: Job, *, expires_at: float) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO pending_spends (token, platform, user_id, job_json, estimate, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7)",
                token, job.origin.platform, job.origin.user_id, job.model_dump(mode="json"), job.cost_estimate or 0.0,
                time.time(), expires_at,
            )  # fmt: skip

        await self._write(write, transaction=False)

    async def peek_pending(self, token: str) -> PendingSpend | None:
        rows = await self._fetch(
            "SELECT token, platform, user_id, job_json, estimate, created_at, expires_at, state FROM pending_spends WHERE token = $1",
            token,
        )  # fmt: skip
        if not rows:
            return None
        data = dict(rows[0])
        return PendingSpend(job=Job.model_validate(data.pop("job_json")), **data)

    async def take_pending(self, token: str, *, to: str, platform: str, user_id: str) -> tuple[Job | None, str]:
        async def write(conn: asyncpg.Connection) -> tuple[Job | None, str]:
            # FOR UPDATE: two processes taking one token at once are served one after the other.
            row = await conn.fetchrow(
                "SELECT job_json, state, expires_at, platform, user_id FROM pending_spends WHERE token = $1 FOR UPDATE", token
            )
            if row is None:
                return None, "missing"
            answer, write_state = pending_answer(
                row_platform=row["platform"], row_user=row["user_id"], state=row["state"], expires_at=row["expires_at"],
                platform=platform, user_id=user_id, to=to, now=time.time(),
            )  # fmt: skip
            if write_state is not None:
                await conn.execute("UPDATE pending_spends SET state = $1 WHERE token = $2", write_state, token)
            return (None if answer == "missing" else Job.model_validate(row["job_json"])), answer

        return await self._write(write)

    # --- spending and outcomes --------------------------------------------------------------------

    async def spend_since(
        self, *, platform: str, since: float, user_id: str | None = None, workspace_id: str | None = None
    ) -> float:
        sql, args = spend.spent_query(platform, since, user_id=user_id, workspace_id=workspace_id)
        rows = await self._fetch(sql, *args)
        return round(float(rows[0][0]), 6)

    async def top_spenders(self, *, since: float, user_id: str | None = None) -> list[Spender]:
        sql = (
            f"SELECT platform, user_id, workspace_id, COUNT(*) AS jobs, COALESCE(SUM({spend.COST_SQL}), 0) AS spent "
            "FROM jobs WHERE created_at >= $1"
        )
        args: list[Any] = [since]
        if user_id is not None:
            sql += " AND user_id = $2"
            args.append(user_id)
        sql += " GROUP BY platform, user_id, workspace_id ORDER BY 5 DESC, 1, 2"
        return [Spender(**{**dict(r), "spent": float(r["spent"])}) for r in await self._fetch(sql, *args)]

    async def job_outcomes(
        self, *, since: float, exclude_kinds: Collection[JobKind] = (), platform: str | None = None,
        workspace_id: str | None = None, scoped: bool = False, include_scenes: bool = True,
    ) -> list[JobOutcome]:
        sql = (
            f"SELECT pipeline, status, created_at, finished_at, {spend.COST_SQL} AS cost, "
            "COALESCE((state_json ->> 'gpu_seconds')::double precision, 0) AS gpu_seconds, user_id, "
            "origin_json ->> 'user_name' AS user_name, state_json #>> '{ab,split}' AS ab_split, "
            "state_json #>> '{ab,arm}' AS ab_arm FROM jobs WHERE created_at >= $1 AND kind <> ALL($2::text[])"
        )
        args: list[Any] = [since, [k.value for k in exclude_kinds]]
        if scoped:
            sql += " AND platform = $3 AND workspace_id IS NOT DISTINCT FROM $4"
            args += [platform, workspace_id]
        if not include_scenes:
            sql += " AND (state_json ->> 'story_scene') IS NULL AND (state_json ->> 'take') IS NULL"
        rows = await self._fetch(sql + " ORDER BY pipeline, created_at", *args)
        return [JobOutcome(**{**dict(r), "cost": float(r["cost"] or 0), "gpu_seconds": float(r["gpu_seconds"] or 0)}) for r in rows]

    async def remote_jobs(
        self, *, platform: str | None = None, workspace_id: str | None = None, scoped: bool = False,
        provider: str | None = None, remote_id: str | None = None, limit: int = 500,
    ) -> list[RemoteRef]:
        sql, args = "SELECT remote_id, id, status FROM jobs WHERE remote_id IS NOT NULL", []  # type: ignore[var-annotated]
        if scoped:
            args += [platform, workspace_id]
            sql += f" AND platform = ${len(args) - 1} AND workspace_id IS NOT DISTINCT FROM ${len(args)}"
        if provider is not None:
            args.append(provider)
            sql += f" AND provider = ${len(args)}"
        if remote_id is not None:
            args.append(remote_id)
            sql += f" AND remote_id = ${len(args)}"
        args.append(limit)
        rows = await self._fetch(sql + f" ORDER BY created_at DESC, seq DESC LIMIT ${len(args)}", *args)
        return [RemoteRef(remote_id=r["remote_id"], job_id=r["id"], status=JobStatus(r["status"])) for r in rows]

    async def lease_holders(self) -> list[LeaseHolder]:
        rows = await self._fetch(
            "SELECT lease_owner, COUNT(*) AS jobs, MAX(lease_until) AS until FROM jobs WHERE lease_owner IS NOT NULL "
            'AND status <> ALL($1::text[]) GROUP BY lease_owner ORDER BY 2 DESC, lease_owner COLLATE "C"',
            _TERMINAL,
        )
        return [LeaseHolder(owner=r["lease_owner"], jobs=int(r["jobs"]), until=r["until"]) for r in rows]

    # --- signals --------------------------------------------------------------------------------

    async def publish(self, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", NAMESPACE, SIGNALS)
            signal_id = await conn.fetchval(
                "INSERT INTO job_signals (job_id, kind, payload_json, at) VALUES ($1, $2, $3::jsonb, $4) RETURNING id",
                job_id, kind, payload, time.time(),
            )  # fmt: skip
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(signal_id))  # delivered at commit

        await self._write(write)

    async def signals_after(self, cursor: int, limit: int = 500) -> list[Signal]:
        rows = await self._fetch(
            "SELECT id, job_id, kind, payload_json, at FROM job_signals WHERE id > $1 ORDER BY id LIMIT $2", cursor, limit
        )
        return [Signal(id=r["id"], job_id=r["job_id"], kind=r["kind"], payload=r["payload_json"] or {}, at=r["at"]) for r in rows]

    async def last_signal_id(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(id), 0) FROM job_signals")
        return int(rows[0][0])

    async def wait_for_signal(self, timeout: float) -> None:
        """Return when a NOTIFY arrives, when the listening connection was (re)made (the caller
        then catches up by id), or at `timeout`."""
        await self._listener.wait(timeout)

    async def prune_signals(self, older_than: float) -> int:
        async def write(conn: asyncpg.Connection) -> int:
            status = await conn.execute("DELETE FROM job_signals WHERE at < $1", older_than)
            return int(status.split()[-1])

        return await self._write(write, transaction=False)

    @property
    def listener(self) -> Listener:
        return self._listener

    # --- workers and the queue --------------------------------------------------------------------

    async def heartbeat(self, worker_id: str, *, host: str, pid: int, role: str, started_at: float, held: int) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute(
                "INSERT INTO workers (id, host, pid, role, started_at, last_seen, held) VALUES ($1, $2, $3, $4, $5, $6, $7) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, role = excluded.role, "
                "started_at = excluded.started_at, last_seen = excluded.last_seen, held = excluded.held",
                worker_id, host, pid, role, started_at, time.time(), held,
            )  # fmt: skip

        await self._write(write, transaction=False)

    async def workers(self) -> list[WorkerRow]:
        rows = await self._fetch("SELECT id, host, pid, role, started_at, last_seen, held FROM workers ORDER BY started_at, id")
        return [WorkerRow(**dict(r)) for r in rows]

    async def drop_worker(self, worker_id: str) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM workers WHERE id = $1", worker_id)

        await self._write(write, transaction=False)

    async def queue_stats(self, platforms: Collection[str] | None = None) -> QueueStats:
        sql = (
            "SELECT COUNT(*) FILTER (WHERE status = 'queued') AS queued, "
            "MIN(created_at) FILTER (WHERE status = 'queued') AS oldest_queued_at, "
            "COUNT(*) FILTER (WHERE status <> 'queued') AS running FROM jobs WHERE status <> ALL($1::text[])"
        )
        args: list[Any] = [_TERMINAL]
        if platforms is not None:
            sql += " AND platform = ANY($2::text[])"
            args.append(list(platforms))
        row = (await self._fetch(sql, *args))[0]
        return QueueStats(queued=int(row["queued"]), oldest_queued_at=row["oldest_queued_at"], running=int(row["running"]))

    async def queue_order(self, platforms: Collection[str] | None = None) -> list[str]:
        names = None if platforms is None else list(platforms)
        if names == []:
            return []
        free = "status = 'queued' AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= $2)"
        only: list[Any] = []
        if names is not None:
            only.append(names)
            free += " AND platform = ANY($3::text[])"
        # One read, as in claim_queued: what every user has taken, and every waiting job.
        read = (
            "SELECT 'taken' AS kind, NULL AS id, platform, workspace_id, user_id, COUNT(*)::float8 AS x, 0::bigint AS seq "
            "FROM jobs WHERE status <> ALL($1::text[]) AND lease_owner IS NOT NULL AND lease_until > $2 "
            "GROUP BY platform, workspace_id, user_id "
            f"UNION ALL SELECT 'queued', id, platform, workspace_id, user_id, created_at, seq FROM jobs WHERE {free} "
            "ORDER BY kind, x, seq"
        )
        taken: dict[str, int] = {}
        candidates: list[Candidate] = []
        for r in await self._fetch(read, _TERMINAL, time.time(), *only):
            key = user_key(r["platform"], r["workspace_id"], r["user_id"])
            if r["kind"] == "taken":
                taken[key] = int(r["x"])
            else:
                candidates.append(Candidate(r["id"], key, r["x"]))
        return fair_order(candidates, taken)


async def _event(
    conn: asyncpg.Connection, job_id: str, status: JobStatus, progress: int | None, detail: str | None, at: float,
    runner: str | None,
) -> None:
    await conn.execute(
        "INSERT INTO job_events (job_id, at, status, progress, detail, runner) VALUES ($1, $2, $3, $4, $5, $6)",
        job_id, at, status.value, progress, detail, runner,
    )  # fmt: skip


async def _explain_refusal(conn: asyncpg.Connection, job_id: str, fence: str | None) -> None:
    row = await conn.fetchrow("SELECT status, lease_owner FROM jobs WHERE id = $1", job_id)
    if row is None:
        raise KeyError(job_id)
    if JobStatus(row["status"]) in TERMINAL:
        raise AlreadyFinished(job_id, f"already {row['status']}")
    raise LeaseLost(job_id, f"lease now held by {row['lease_owner']}, not {fence}")


def _to_row(job: Job) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col in PLAIN_COLUMNS:
        value = getattr(job, col)
        row[col] = value.value if isinstance(value, (JobStatus, JobKind)) else value
    for col in ORIGIN_COLUMNS:
        row[col] = getattr(job.origin, col)
    row["origin_json"] = {"extra": job.origin.extra, "user_name": job.origin.user_name}
    row["params_json"] = job.params.model_dump(mode="json")
    row["state_json"] = job.state
    return row


def _from_record(record: asyncpg.Record) -> Job:
    data = dict(record)
    data.pop("seq", None)
    data.pop("search", None)
    origin_blob = data.pop("origin_json") or {}
    origin = Origin(
        **{c: data.pop(c) for c in ORIGIN_COLUMNS}, extra=origin_blob.get("extra", {}), user_name=origin_blob.get("user_name")
    )
    params = GenerateParams.model_validate(data.pop("params_json"))
    state = data.pop("state_json") or {}
    return Job(origin=origin, params=params, state=state, **data)


def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)
