"""The job store on PostgreSQL: the same contract as the SQLite `JobStore`, for several
processes on several machines sharing one database.

The contract's reads and writes are storage.base's (written once for both backends); what is
PostgreSQL's own is here:

- A connection pool (asyncpg). Every write script is one transaction on a pooled connection
  (its advisory locks taken first), run as a task the caller's cancellation does not cut short
  (as SQLite's writer: a write, once started, is carried out; `close()` waits for writes under way).
- Submissions are group-committed (`create`): those that arrive together share one transaction.
- The spend gate runs inside the inserting transaction under per-scope advisory locks
  (storage.spend.locks, taken in sorted order).
- `claim_queued`: one transaction. A transaction-scoped advisory lock (CLAIM_LOCK) makes
  concurrent claimers take turns, so the counts behind the global and per-user caps are
  those the previous claimer committed (READ COMMITTED reads a fresh snapshot per statement)
  and the caps hold across all workers. The chosen rows are then locked `FOR UPDATE SKIP
  LOCKED`: a row another transaction is writing (a cancel) is passed over, not waited for,
  and the pick is made again without it.
- Signals: `publish` inserts into job_signals and `NOTIFY videobot_jobs, '<id>'` in one
  transaction, under an advisory lock (SIGNALS_LOCK) so ids commit in id order and a
  reader's cursor never passes a signal still uncommitted. `wait_for_signal` listens on a
  dedicated connection (storage.pg.listener) that reconnects when dropped; the reader
  catches up by id (`signals_after`), so a NOTIFY lost while disconnected loses nothing.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from storage import spend
from storage.base import SqlStore, insert_event
from storage.claims import fair_pick
from storage.errors import OverBudget, QueueFull, StoreClosed
from storage.media_paths import MediaPaths
from storage.models import Job
from storage.pg.batches import Batcher
from storage.pg.listener import Listener
from storage.pg.schema import migrate
from storage.rows import RowMapper
from storage.spend import QueueLimit, SpendLimit
from storage.sql import POSTGRES, Row, Script, Stmt, Write

log = logging.getLogger(__name__)
T = TypeVar("T")
CHANNEL = "videobot_jobs"
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


class PgJobStore(SqlStore):
    backend = "postgresql"
    dialect = POSTGRES

    def __init__(self, pool: asyncpg.Pool, dsn: str, *, media_root: Path | None = None) -> None:
        self._pool = pool
        self._dsn = dsn
        self._closed = False
        self._outstanding: set[asyncio.Task[Any]] = set()
        self._listener = Listener(dsn, CHANNEL, init=_init_connection)
        self.rows = RowMapper(json_text=False, paths=MediaPaths(media_root) if media_root is not None else None)
        self._creates: Batcher[_Create] = Batcher(self._create_batches, name="pg-create-batches", max_batch=MAX_BATCH)
        self._signals: Batcher[_Signal] = Batcher(self._signal_batches, name="pg-signal-batches", max_batch=MAX_BATCH)

    @classmethod
    async def open(cls, url: str, *, pool_min: int = 1, pool_max: int = 10, media_root: Path | None = None) -> PgJobStore:
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
        return cls(pool, dsn, media_root=media_root)

    async def close(self) -> None:
        """Let writes under way commit, then close the pool and the listener. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while self._outstanding or self._creates.futures() or self._signals.futures():
            await asyncio.gather(
                *list(self._outstanding), *self._creates.futures(), *self._signals.futures(), return_exceptions=True
            )  # fmt: skip
        await self._listener.close()
        await self._pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        return self._pool

    @property
    def listener(self) -> Listener:
        return self._listener

    # --- the two primitives -----------------------------------------------------------------------

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        if self._closed:
            raise StoreClosed("the job store is closed")
        async with self._pool.acquire() as conn:
            return list(await conn.fetch(self.dialect.render(sql), *args))

    async def _run(self, write: Write) -> Any:
        """The script in one transaction (its advisory locks first); a `solo` one without (one
        writing statement is atomic by itself: it saves the BEGIN and COMMIT round trips, most of
        the cost of the runner's many small writes). Once started it finishes even if the caller is
        cancelled; a deadlock or serialization failure runs it again (PostgreSQL undid all of it)."""

        async def run(conn: asyncpg.Connection) -> Any:
            if write.solo and not write.locks:
                return await self._drive(conn, write)
            async with conn.transaction():
                lock = self.dialect.lock(write.locks)
                if lock is not None:
                    await conn.execute(self.dialect.render(lock.sql), *lock.args)
                return await self._drive(conn, write)

        return await self._shielded(run)

    async def _drive(self, conn: asyncpg.Connection, write: Write) -> Any:
        script = write.make()
        try:
            stmt = next(script)
            while True:
                stmt = script.send(list(await conn.fetch(self.dialect.render(stmt.sql), *stmt.args)))
        except StopIteration as done:
            return done.value

    async def _shielded(self, fn: Any) -> Any:
        if self._closed:
            raise StoreClosed("the job store is closed")

        async def run() -> Any:
            for attempt in range(5):
                try:
                    async with self._pool.acquire() as conn:
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

    # --- submissions, group-committed ------------------------------------------------------------

    async def create(
        self, job: Job, *, lease_owner: str | None = None, lease_seconds: float | None = None,
        spend_limits: list[SpendLimit] | None = None, queue_limit: QueueLimit | None = None,
    ) -> Job:
        """As `SqlStore.create`, but the creates that arrive together are written together: one
        transaction, the advisory locks of all their scopes taken at once (sorted, so two writers
        cannot deadlock), one read of every scope's count and spend, then each create is checked
        in arrival order against those figures plus the creates accepted before it (the same
        rule, storage.spend.cost_of), and the accepted rows and their events are inserted in two
        pipelined statements. A refused create raises as alone; a batch that fails in the
        database (a duplicate id) is run again one create at a time."""
        if self._closed:
            raise StoreClosed("the job store is closed")
        row = self.new_row(job, lease_owner, lease_seconds)
        row.setdefault("lease_owner", None)
        row.setdefault("lease_until", None)
        entry = _Create(job, row, lease_owner, list(spend_limits or []), queue_limit, asyncio.get_running_loop().create_future())
        await self._creates.put(entry)
        return job.model_copy(update={"lease_owner": row["lease_owner"], "lease_until": row["lease_until"]})

    async def _create_batches(self, batch: list[_Create]) -> None:
        try:
            await self._shielded(lambda conn: self._create_batch(conn, batch))
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                _settle(batch[0], exc)
                return
            for entry in batch:  # one at a time: only the create at fault fails
                try:
                    await SqlStore.create(
                        self, entry.job, lease_owner=entry.lease_owner, spend_limits=entry.limits, queue_limit=entry.queue,
                        lease_seconds=None if entry.row["lease_until"] is None else entry.row["lease_until"] - time.time(),
                    )  # fmt: skip
                    _settle(entry, None)
                except Exception as one:
                    _settle(entry, one)

    async def _create_batch(self, conn: asyncpg.Connection, batch: list[_Create]) -> None:
        d = self.dialect
        async with conn.transaction():
            locks = set().union(*(spend.locks(e.limits, e.queue) for e in batch))
            lock = d.lock(locks)
            if lock is not None:
                await conn.execute(d.render(lock.sql), *lock.args)
            queues = {(e.queue.platform, e.queue.user_id): e.queue for e in batch if e.queue is not None}
            limits = list(dict.fromkeys(limit for e in batch for limit in e.limits))
            counts, spent = await self._figures(conn, list(queues.values()), limits)
            accepted: list[_Create] = []
            refusals: list[tuple[_Create, Exception]] = []
            for e in batch:
                refusal = _refusal(e, counts, spent)
                if refusal is not None:
                    refusals.append((e, refusal))
                    continue
                accepted.append(e)
                unfinished = e.row["status"] in spend.UNFINISHED and e.row.get("take") is None
                for key in counts:
                    if unfinished and key == (e.row["platform"], e.row["user_id"]):
                        counts[key] += 1
                for limit in spent:
                    if limit.counts(e.row):
                        spent[limit] += spend.cost_of(e.row)
            if accepted:
                columns = list(accepted[0].row)
                await conn.executemany(
                    d.render(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"),
                    [tuple(e.row[c] for c in columns) for e in accepted],
                )
                events = [insert_event(e.job.id, e.job.status, e.job.progress, None, e.job.created_at, e.lease_owner) for e in accepted]
                await conn.executemany(d.render(events[0].sql), [tuple(ev.args) for ev in events])
        for e in accepted:
            _settle(e, None)
        for e, refusal in refusals:
            _settle(e, refusal)

    async def _figures(
        self, conn: asyncpg.Connection, queues: list[QueueLimit], limits: list[SpendLimit]
    ) -> tuple[dict[tuple[str, str], int], dict[SpendLimit, float]]:
        """Every queue scope's unfinished count and every limit's spend, in one statement."""
        if not queues and not limits:
            return {}, {}
        parts: list[str] = []
        args: list[Any] = []
        for q in queues:
            sql, more = spend.queue_query(self.dialect, q)
            parts.append(f"({sql})")
            args += more
        for limit in limits:
            sql, more = spend.spent_query(limit.platform, limit.since, user_id=limit.user_id, workspace_id=limit.workspace_id)
            parts.append(f"({sql})")
            args += more
        values = list((await conn.fetchrow(self.dialect.render(f"SELECT {', '.join(parts)}"), *args)).values())
        counts = {(q.platform, q.user_id): int(v) for q, v in zip(queues, values)}
        spent = {limit: float(v) for limit, v in zip(limits, values[len(queues) :])}
        return counts, spent

    # --- what PostgreSQL does its own way -------------------------------------------------------------

    async def claim_queued(
        self, owner: str, lease_seconds: float, *, platforms: Collection[str] | None, max_running: int,
        max_running_per_user: int, limit: int,
    ) -> list[Job]:
        names = None if platforms is None else list(platforms)
        if names == [] or limit <= 0:
            return []

        def script() -> Script[list[Job]]:
            now = time.time()
            claimed: list[Job] = []
            passed: list[str] = []
            for _ in range(4):
                # A user's k-th waiting job can be picked only after their first k-1: at most `limit` each.
                read = self.claim_read(names, now, depth=min(max_running_per_user, limit - len(claimed)), passed=passed)
                taken, candidates = self.claim_figures((yield read))
                chosen = fair_pick(
                    candidates, taken, taken_total=sum(taken.values()), max_running=max_running,
                    max_running_per_user=max_running_per_user, limit=limit - len(claimed),
                )  # fmt: skip
                if not chosen:
                    break
                # Rows another transaction is writing (a cancel) are passed over, not waited for.
                got_rows = yield Stmt(
                    "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id IN (SELECT id FROM jobs WHERE id = ANY(?::text[]) "
                    "AND status = 'queued' AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?) "
                    "FOR UPDATE SKIP LOCKED) RETURNING *",
                    [owner, now + lease_seconds, chosen, now],
                )
                got = {r["id"]: self.rows.from_row(r) for r in got_rows}
                claimed += [got[job_id] for job_id in chosen if job_id in got]
                if len(got) == len(chosen):
                    break
                # Read and pick again without them (what we just leased now counts as taken).
                passed += [job_id for job_id in chosen if job_id not in got]
            return claimed

        # The claim lock: claimers take turns, so the counts behind the caps are those the previous one committed.
        result: list[Job] = await self._script(script, {CLAIM_LOCK})
        return result

    async def publish(self, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        """Group-committed as submissions are: the signals of a batch in one transaction, one NOTIFY."""
        if self._closed:
            raise StoreClosed("the job store is closed")
        await self._signals.put(_Signal(job_id, kind, payload, time.time(), asyncio.get_running_loop().create_future()))

    async def _signal_batches(self, batch: list[_Signal]) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                # The signals lock: ids commit in id order, so a reader's cursor never passes an uncommitted one.
                lock = self.dialect.lock({SIGNALS_LOCK})
                assert lock is not None
                await conn.execute(self.dialect.render(lock.sql), *lock.args)
                last = await conn.fetchval(
                    "WITH written AS (INSERT INTO job_signals (job_id, kind, payload_json, at) "
                    "SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[], $4::float8[]) RETURNING id) SELECT MAX(id) FROM written",
                    [s.job_id for s in batch], [s.kind for s in batch], [s.payload for s in batch], [s.at for s in batch],
                )  # fmt: skip
                await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, str(last))  # delivered at commit

        await self._shielded(write)
        for entry in batch:
            _settle(entry, None)

    async def wait_for_signal(self, timeout: float) -> None:
        """Return when a NOTIFY arrives, when the listening connection was (re)made (the caller
        then catches up by id), or at `timeout`."""
        await self._listener.wait(timeout)


MAX_BATCH = 500
CLAIM_LOCK = "claim"
SIGNALS_LOCK = "signals"


@dataclass
class _Create:
    job: Job
    row: dict[str, Any]
    lease_owner: str | None
    limits: list[SpendLimit]
    queue: QueueLimit | None
    future: asyncio.Future[None]


@dataclass
class _Signal:
    job_id: str
    kind: str
    payload: dict[str, Any]
    at: float
    future: asyncio.Future[None]


def _refusal(e: _Create, counts: dict[tuple[str, str], int], spent: dict[SpendLimit, float]) -> Exception | None:
    if e.queue is not None:
        pending = counts[(e.queue.platform, e.queue.user_id)]
        if pending >= e.queue.limit:
            return QueueFull(e.queue, pending)
    cost = e.job.cost_estimate or 0.0
    for limit in e.limits:
        already = round(spent[limit], 6)
        if already + cost > limit.limit + 1e-9:
            return OverBudget(limit, already, cost)
    return None


def _settle(entry: _Create | _Signal, error: BaseException | None) -> None:
    if entry.future.done():
        return
    if error is None:
        entry.future.set_result(None)
    else:
        entry.future.set_exception(error)



def _redacted(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return urlunsplit(parts)
