"""The typed job repository. Every status change writes the row and a `job_events` line
in one transaction, so the history and the row never disagree."""
from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from storage import gallery, spend
from storage.claims import Candidate, fair_order, fair_pick, user_key
from storage.db import connect
from storage.gallery import GalleryQuery
from storage.leases import HolderState, holder_state
from storage.models import (
    TERMINAL, GenerateParams, Job, JobKind, JobOutcome, JobStatus, LeaseHolder, Origin, PendingSpend, QueueStats, RemoteRef,
    Signal, Spender, WorkerRow,
)
from storage.spend import QueueLimit, SpendLimit
from storage.writer import GroupWriter

_ORIGIN_COLUMNS = ("platform", "workspace_id", "channel_id", "user_id", "status_message_id", "result_message_id")
_PLAIN_COLUMNS = (
    "id", "parent_id", "kind", "prompt", "pipeline", "provider", "model", "remote_id", "status", "progress",
    "cost_estimate", "cost_actual", "output_path", "thumbnail_path", "error_code", "error_message",
    "created_at", "started_at", "finished_at", "updated_at", "deleted_at", "media_expired_at",
)  # fmt: skip
log = logging.getLogger(__name__)
_UPDATABLE = set(_PLAIN_COLUMNS) - {"id", "created_at"} | {"status_message_id", "result_message_id"}
#: The job columns, for the other backend (storage.pg) and `videobot db copy`.
ORIGIN_COLUMNS, PLAIN_COLUMNS, UPDATABLE = _ORIGIN_COLUMNS, _PLAIN_COLUMNS, frozenset(_UPDATABLE)


class JobEvent(dict[str, Any]):
    """One row of a job's history: at, status, progress, detail, runner (the lease owner that wrote it, or None)."""


class StaleWrite(Exception):
    """A write that was refused because the writer's view of the job is out of date."""

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(f"job {job_id}: {why}")
        self.job_id = job_id


class LeaseLost(StaleWrite):
    """The writer no longer holds the job's lease: another runner drives it now."""


class AlreadyFinished(StaleWrite):
    """The job reached a terminal state (perhaps set by another process); it is never overwritten."""


class JobStore:
    """Reads on an aiosqlite connection; every write through one group-committing writer
    (`storage.writer`), each write one synchronous function run in a single thread hop."""

    backend = "sqlite"

    def __init__(self, conn: aiosqlite.Connection, writer: GroupWriter) -> None:
        self._conn = conn
        self._writer = writer
        self._closed = False
        #: Set when this store publishes a signal: a waiter in this process need not poll for it.
        self._published = asyncio.Event()

    @classmethod
    async def open(cls, path: Path) -> JobStore:
        conn = await connect(path)  # migrates
        writer = GroupWriter(path)
        try:
            await writer.open()
        except BaseException:
            await conn.close()
            raise
        return cls(conn, writer)

    async def close(self) -> None:
        """Let writes that are queued or under way commit, then close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        await self._writer.close()
        await self._conn.close()

    @property
    def writer(self) -> GroupWriter:
        return self._writer

    # --- writes ---------------------------------------------------------------------------

    async def create(
        self, job: Job, *, lease_owner: str | None = None, lease_seconds: float | None = None,
        spend_limits: list[SpendLimit] | None = None, queue_limit: QueueLimit | None = None,
    ) -> Job:
        """Insert a new job (and its first event); with `lease_owner`, already leased to that runner.

        With `queue_limit`, refused (QueueFull, nothing written) when the user already has that many
        unfinished jobs.

        With `spend_limits`, the job's estimate is reserved against them in the same transaction
        (raises OverBudget and writes nothing when it would pass one)."""
        row = _to_row(job)
        if lease_owner is not None:
            row["lease_owner"] = lease_owner
            row["lease_until"] = time.time() + (lease_seconds or 60.0)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)

        def write(conn: sqlite3.Connection) -> None:
            if queue_limit is not None:
                spend.check_queue(conn, queue_limit)
            if spend_limits:
                spend.check(conn, spend_limits, job.cost_estimate or 0.0)
            conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(row.values()))
            _event(conn, job.id, job.status, job.progress, None, job.created_at, lease_owner)

        await self._writer.run(write)
        return job.model_copy(update={"lease_owner": row.get("lease_owner"), "lease_until": row.get("lease_until")})

    async def update(
        self, job_id: str, *, detail: str | None = None, fence: str | None = None,
        spend_limits: list[SpendLimit] | None = None, by: str | None = None, **fields: Any,
    ) -> Job:
        """Write fields; a status change also appends an event. Returns the job as stored.

        `fence`: the lease owner the write is conditional on (the runner's writes). A write
        that changes `status` never overwrites a terminal state, whoever writes it.
        Raises LeaseLost / AlreadyFinished when the condition fails; nothing is written then.
        The event names its runner: `by`, else `fence`.
        """
        now = time.time()
        sets: list[tuple[str, Any]] = [("updated_at = ?", now)]
        for key, value in fields.items():
            if key == "state":
                sets.append(("state_json = ?", json.dumps(value)))
            elif key == "origin_extra":
                sets.append(("origin_json = json_set(origin_json, '$.extra', json(?))", json.dumps(value)))
            elif key == "params":
                sets.append(("params_json = ?", value.model_dump_json()))
            elif key in _UPDATABLE:
                sets.append((f"{key} = ?", value.value if isinstance(value, (JobStatus, JobKind)) else value))
            else:
                raise KeyError(f"not an updatable job field: {key}")
        status = fields.get("status")
        assignments = ", ".join(fragment for fragment, _ in sets)
        where, args = "id = ?", [job_id]
        if fence is not None:
            where += " AND lease_owner = ?"
            args.append(fence)
        if status is not None or fence is not None:
            where += f" AND status NOT IN ({_marks(TERMINAL)})"
            args.extend(s.value for s in TERMINAL)
        values = (*(v for _, v in sets), *args)

        def write(conn: sqlite3.Connection) -> Job:
            if spend_limits and fields.get("cost_estimate") is not None:
                # A new price for a running job (a fallback hop): the others' spend plus the new estimate.
                spend.check(conn, spend_limits, float(fields["cost_estimate"]), excluding=job_id)
            cur = conn.execute(f"UPDATE jobs SET {assignments} WHERE {where}", values)
            if cur.rowcount == 0:
                _explain_refusal(conn, job_id, fence)
            stored = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if status is not None or detail is not None:
                _event(conn, job_id, JobStatus(stored["status"]), stored["progress"], detail, now, by or fence)
            return _from_row(stored)

        result: Job = await self._writer.run(write)
        return result

    async def add_event(self, job_id: str, detail: str, *, by: str | None = None) -> None:
        """A line in the job's history that changes nothing else (a note after the end)."""

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT status, progress FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is not None:
                _event(conn, job_id, JobStatus(row["status"]), row["progress"], detail, time.time(), by)

        await self._writer.run(write)

    async def set_progress(self, job_id: str, progress: int, *, fence: str | None = None, by: str | None = None) -> None:
        # Progress ticks are not history: no event row (so `by` names nobody anywhere; accepted for symmetry).
        sql = "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?"
        args: list[Any] = [progress, time.time(), job_id]
        if fence is not None:
            sql += f" AND lease_owner = ? AND status NOT IN ({_marks(TERMINAL)})"
            args += [fence, *(s.value for s in TERMINAL)]

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, args).rowcount == 0:
                _explain_refusal(conn, job_id, fence)

        await self._writer.run(write)

    async def reopen_delivery(self, job_id: str, detail: str, *, by: str | None = None) -> Job:
        """A completed job whose result could not be posted goes back to `delivering`
        (`videobot redeliver`); the only move out of a terminal state there is."""

        def write(conn: sqlite3.Connection) -> Job:
            cur = conn.execute(
                "UPDATE jobs SET status = ?, error_code = NULL, error_message = NULL, finished_at = NULL, updated_at = ? "
                "WHERE id = ? AND status = ? AND error_code = 'undelivered' AND output_path IS NOT NULL",
                (JobStatus.DELIVERING.value, time.time(), job_id, JobStatus.COMPLETED.value),
            )
            if cur.rowcount == 0:
                raise AlreadyFinished(job_id, "not a completed job waiting for delivery")
            _event(conn, job_id, JobStatus.DELIVERING, 100, detail, time.time(), by)
            return _from_row(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())

        result: Job = await self._writer.run(write)
        return result

    # --- leases: one runner owns a job at a time, across processes -------------------------

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Take the job's lease if it is free, ours, expired, or held by a process that is gone."""

        def write(conn: sqlite3.Connection) -> bool:
            # Read and set in one transaction: two runners cannot both take it.
            row = conn.execute("SELECT status, lease_owner, lease_until FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or JobStatus(row["status"]) in TERMINAL:
                return False
            current = row["lease_owner"]
            state = holder_state(current, row["lease_until"])
            if current is not None and current != owner and state is HolderState.ALIVE:
                return False
            conn.execute("UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ?", (owner, time.time() + lease_seconds, job_id))
            if current is not None and current != owner:
                log.info("job %s: took over the lease from %s (%s)", job_id, current, state)
            return True

        taken: bool = await self._writer.run(write)
        return taken

    async def renew(self, owner: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend our leases; returns the ids we still hold (a missing one was lost or finished)."""
        if not job_ids:
            return set()
        ids = list(job_ids)

        def write(conn: sqlite3.Connection) -> set[str]:
            held: set[str] = set()
            for chunk in _chunks(ids, 500):
                conn.execute(
                    f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN ({_marks(chunk)})",
                    (time.time() + lease_seconds, owner, *chunk),
                )
                rows = conn.execute(f"SELECT id FROM jobs WHERE lease_owner = ? AND id IN ({_marks(chunk)})", (owner, *chunk))
                held.update(row[0] for row in rows)
            return held

        result: set[str] = await self._writer.run(write)
        return result

    async def release(self, owner: str, job_ids: Sequence[str] | None = None) -> None:
        ids = None if job_ids is None else list(job_ids)
        if ids == []:
            return

        def write(conn: sqlite3.Connection) -> None:
            if ids is None:
                conn.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,))
            else:
                conn.execute(
                    f"UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND id IN ({_marks(ids)})",
                    (owner, *ids),
                )

        await self._writer.run(write)

    async def claim_queued(
        self, owner: str, lease_seconds: float, *, platforms: Collection[str] | None, max_running: int,
        max_running_per_user: int, limit: int,
    ) -> list[Job]:
        """Lease up to `limit` queued jobs to `owner`, in fair order, within the caps (storage.claims).

        Caps count every runner's jobs in the database, not this process's: taken = not
        terminal with a live lease. One `BEGIN IMMEDIATE` transaction (the writer's), so two
        processes claiming at once are serialised by SQLite's write lock."""
        names = None if platforms is None else list(platforms)
        if names == [] or limit <= 0:
            return []

        def write(conn: sqlite3.Connection) -> list[Job]:
            now = time.time()
            terminal = [s.value for s in TERMINAL]
            taken: dict[str, int] = {}
            for row in conn.execute(
                f"SELECT platform, workspace_id, user_id, COUNT(*) FROM jobs WHERE status NOT IN ({_marks(terminal)}) "
                "AND lease_owner IS NOT NULL AND lease_until > ? GROUP BY platform, workspace_id, user_id",
                (*terminal, now),
            ):
                taken[user_key(row[0], row[1], row[2])] = int(row[3])
            total = sum(taken.values())
            if total >= max_running:
                return []
            where = "status = ? AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?)"
            args: list[Any] = [JobStatus.QUEUED.value, now]
            if names is not None:
                where += f" AND platform IN ({_marks(names)})"
                args.extend(names)
            # Only each user's first min(max_running_per_user, limit) waiting jobs can be picked at all
            # (a user's k-th is picked only after their first k-1).
            rows = conn.execute(
                "SELECT id, platform, workspace_id, user_id, created_at FROM ("
                "SELECT id, platform, workspace_id, user_id, created_at, rowid AS seq, ROW_NUMBER() OVER "
                "(PARTITION BY platform, workspace_id, user_id ORDER BY created_at, rowid) AS rank "
                f"FROM jobs WHERE {where}) WHERE rank <= ? ORDER BY created_at, seq",
                (*args, min(max_running_per_user, limit)),
            ).fetchall()
            candidates = [Candidate(r[0], user_key(r[1], r[2], r[3]), r[4]) for r in rows]
            chosen = fair_pick(
                candidates, taken, taken_total=total, max_running=max_running,
                max_running_per_user=max_running_per_user, limit=limit,
            )  # fmt: skip
            if not chosen:
                return []
            conn.execute(
                f"UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id IN ({_marks(chosen)})",
                (owner, now + lease_seconds, *chosen),
            )
            stored = {
                r["id"]: _from_row(r) for r in conn.execute(f"SELECT * FROM jobs WHERE id IN ({_marks(chosen)})", chosen)
            }
            return [stored[job_id] for job_id in chosen]

        result: list[Job] = await self._writer.run(write)
        return result

    # --- signals: a job changed, for readers in other processes -------------------------------

    async def publish(self, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO job_signals (job_id, kind, payload_json, at) VALUES (?, ?, ?, ?)",
                (job_id, kind, json.dumps(payload), time.time()),
            )

        await self._writer.run(write)
        self._published.set()

    async def signals_after(self, cursor: int, limit: int = 500) -> list[Signal]:
        async with self._conn.execute(
            "SELECT id, job_id, kind, payload_json, at FROM job_signals WHERE id > ? ORDER BY id LIMIT ?", (cursor, limit)
        ) as cur:
            return [
                Signal(id=r[0], job_id=r[1], kind=r[2], payload=json.loads(r[3] or "{}"), at=r[4]) for r in await cur.fetchall()
            ]

    async def last_signal_id(self) -> int:
        async with self._conn.execute("SELECT COALESCE(MAX(id), 0) FROM job_signals") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def wait_for_signal(self, timeout: float) -> None:
        """SQLite has no notifications: return after min(timeout, 0.2 s), or at once when this
        store published meanwhile; the caller then reads `signals_after` its cursor."""
        try:
            await asyncio.wait_for(self._published.wait(), max(0.0, min(timeout, 0.2)))
        except TimeoutError:
            return
        # Cleared only after a wake-up, so a publish made while the caller was reading is not missed.
        self._published.clear()

    async def prune_signals(self, older_than: float) -> int:
        def write(conn: sqlite3.Connection) -> int:
            return int(conn.execute("DELETE FROM job_signals WHERE at < ?", (older_than,)).rowcount)

        removed: int = await self._writer.run(write)
        return removed

    # --- workers: which processes are alive -------------------------------------------------

    async def heartbeat(self, worker_id: str, *, host: str, pid: int, role: str, started_at: float, held: int) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO workers (id, host, pid, role, started_at, last_seen, held) VALUES (?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, role = excluded.role, "
                "started_at = excluded.started_at, last_seen = excluded.last_seen, held = excluded.held",
                (worker_id, host, pid, role, started_at, time.time(), held),
            )

        await self._writer.run(write)

    async def workers(self) -> list[WorkerRow]:
        async with self._conn.execute(
            "SELECT id, host, pid, role, started_at, last_seen, held FROM workers ORDER BY started_at, id"
        ) as cur:
            return [WorkerRow(**dict(r)) for r in await cur.fetchall()]

    async def drop_worker(self, worker_id: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

        await self._writer.run(write)

    async def queue_stats(self, platforms: Collection[str] | None = None) -> QueueStats:
        """Queued jobs (how many, the oldest's created_at) and running ones (past the queue, not finished)."""
        terminal = [s.value for s in TERMINAL]
        sql = (
            "SELECT COALESCE(SUM(status = ?), 0), MIN(CASE WHEN status = ? THEN created_at END), "
            f"COALESCE(SUM(status != ?), 0) FROM jobs WHERE status NOT IN ({_marks(terminal)})"
        )
        args: list[Any] = [JobStatus.QUEUED.value, JobStatus.QUEUED.value, JobStatus.QUEUED.value, *terminal]
        if platforms is not None:
            names = list(platforms)
            sql += f" AND platform IN ({_marks(names)})"
            args.extend(names)
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        assert row is not None
        return QueueStats(queued=int(row[0]), oldest_queued_at=row[1], running=int(row[2]))

    async def queue_order(self, platforms: Collection[str] | None = None) -> list[str]:
        """The queued jobs no runner holds yet, in the order the workers' claims will start them
        (storage.claims.fair_order: what each user has taken counts, as in `claim_queued`)."""
        names = None if platforms is None else list(platforms)
        if names == []:
            return []
        now = time.time()
        terminal = [s.value for s in TERMINAL]
        taken: dict[str, int] = {}
        async with self._conn.execute(
            f"SELECT platform, workspace_id, user_id, COUNT(*) FROM jobs WHERE status NOT IN ({_marks(terminal)}) "
            "AND lease_owner IS NOT NULL AND lease_until > ? GROUP BY platform, workspace_id, user_id",
            (*terminal, now),
        ) as cur:
            async for row in cur:
                taken[user_key(row[0], row[1], row[2])] = int(row[3])
        where = "status = ? AND (lease_owner IS NULL OR lease_until IS NULL OR lease_until <= ?)"
        args: list[Any] = [JobStatus.QUEUED.value, now]
        if names is not None:
            where += f" AND platform IN ({_marks(names)})"
            args.extend(names)
        async with self._conn.execute(
            f"SELECT id, platform, workspace_id, user_id, created_at FROM jobs WHERE {where} ORDER BY created_at, rowid", args
        ) as cur:
            candidates = [Candidate(r[0], user_key(r[1], r[2], r[3]), r[4]) async for r in cur]
        return fair_order(candidates, taken)

    # --- reads ----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return _from_row(row) if row else None

    async def find_prefix(
        self, prefix: str, limit: int = 2, *, platform: str | None = None, workspace_id: str | None = None, scoped: bool = False
    ) -> list[Job]:
        """Jobs whose id starts with `prefix`; `scoped`: only those of (platform, workspace_id)."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        if not scoped:
            return await self._select("WHERE id LIKE ? ESCAPE '\\' LIMIT ?", (escaped + "%", limit))
        return await self._select(
            "WHERE id LIKE ? ESCAPE '\\' AND platform = ? AND workspace_id IS ? LIMIT ?", (escaped + "%", platform, workspace_id, limit)
        )

    async def list(
        self,
        *,
        platform: str | None = None,
        user_id: str | None = None,
        statuses: Iterable[JobStatus] | None = None,
        include_deleted: bool = False,
        limit: int = 20,
    ) -> list[Job]:
        where, args = [], []
        if platform is not None:
            where.append("platform = ?")
            args.append(platform)
        if user_id is not None:
            where.append("user_id = ?")
            args.append(user_id)
        if statuses is not None:
            values = [s.value for s in statuses]
            where.append(f"status IN ({_marks(values)})")
            args.extend(values)
        if not include_deleted:
            where.append("deleted_at IS NULL")
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        return await self._select(f"{clause} ORDER BY created_at DESC, rowid DESC LIMIT ?", (*args, limit))

    async def unfinished(self, platforms: Iterable[str] | None = None) -> list[Job]:
        """Every non-terminal job, oldest first: what a starting runner must resume."""
        args: list[Any] = [s.value for s in TERMINAL]
        clause = f"WHERE status NOT IN ({_marks(TERMINAL)})"
        if platforms is not None:
            names = list(platforms)
            clause += f" AND platform IN ({_marks(names)})"
            args.extend(names)
        return await self._select(f"{clause} ORDER BY created_at, rowid", tuple(args))

    async def find_by_message(self, platform: str, message_id: str) -> Job | None:
        jobs = await self._select(
            "WHERE platform = ? AND (status_message_id = ? OR result_message_id = ?) ORDER BY created_at DESC LIMIT 1",
            (platform, message_id, message_id),
        )
        return jobs[0] if jobs else None

    async def with_status(self, job_ids: Sequence[str], status: JobStatus) -> list[Job]:
        """Those of `job_ids` now in `status` (one query, however many ids)."""
        if not job_ids:
            return []
        return await self._select(f"WHERE status = ? AND id IN ({_marks(job_ids)})", (status.value, *job_ids))

    # --- settings changed in chat -------------------------------------------------------------

    async def settings_rows(self, platform: str, workspace_id: str | None) -> list[tuple[str, str, str, Any]]:
        """(scope, scope_id, key, value) of one tenant: its own, its channels' and its users'."""
        async with self._conn.execute(
            "SELECT scope, scope_id, key, value_json FROM settings WHERE platform = ? AND workspace_id = ?",
            (platform, workspace_id or ""),
        ) as cur:
            return [(r["scope"], r["scope_id"], r["key"], json.loads(r["value_json"])) for r in await cur.fetchall()]

    async def put_setting(
        self, platform: str, workspace_id: str | None, scope: str, scope_id: str, key: str, value: Any, *, by: str
    ) -> None:
        def write(conn: sqlite3.Connection) -> None:
            if value is None:
                conn.execute(
                    "DELETE FROM settings WHERE platform = ? AND workspace_id = ? AND scope = ? AND scope_id = ? AND key = ?",
                    (platform, workspace_id or "", scope, scope_id, key),
                )
                return
            conn.execute(
                "INSERT INTO settings (platform, workspace_id, scope, scope_id, key, value_json, updated_by, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (platform, workspace_id, scope, scope_id, key) "
                "DO UPDATE SET value_json = excluded.value_json, updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                (platform, workspace_id or "", scope, scope_id, key, json.dumps(value), by, time.time()),
            )

        await self._writer.run(write)

    # --- spends waiting for their owner's confirmation ---------------------------------------

    async def put_pending(self, token: str, job: Job, *, expires_at: float) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO pending_spends (token, platform, user_id, job_json, estimate, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token, job.origin.platform, job.origin.user_id, job.model_dump_json(), job.cost_estimate or 0.0, time.time(), expires_at),
            )

        await self._writer.run(write)

    async def peek_pending(self, token: str) -> PendingSpend | None:
        """A pending spend as it stands, without taking it (what an Edit form starts from)."""
        async with self._conn.execute(
            "SELECT token, platform, user_id, job_json, estimate, created_at, expires_at, state FROM pending_spends WHERE token = ?",
            (token,),
        ) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        data = dict(row)
        return PendingSpend(job=Job.model_validate_json(data.pop("job_json")), **data)

    async def take_pending(self, token: str, *, to: str, platform: str, user_id: str) -> tuple[Job | None, str]:
        """Move a pending spend of this user out of `pending` (to `confirmed` or `cancelled`), once.
        Returns its job and the state it was in (`pending`, `expired`, ..., `missing`, `not_owner`)."""

        def write(conn: sqlite3.Connection) -> tuple[Job | None, str]:
            row = conn.execute(
                "SELECT job_json, state, expires_at, platform, user_id FROM pending_spends WHERE token = ?", (token,)
            ).fetchone()
            if row is None:
                return None, "missing"
            answer, write_state = spend.pending_answer(
                row_platform=row["platform"], row_user=row["user_id"], state=row["state"], expires_at=row["expires_at"],
                platform=platform, user_id=user_id, to=to, now=time.time(),
            )  # fmt: skip
            if write_state is not None:
                conn.execute("UPDATE pending_spends SET state = ? WHERE token = ?", (write_state, token))
            return (None if answer == "missing" else Job.model_validate_json(row["job_json"])), answer

        result: tuple[Job | None, str] = await self._writer.run(write)
        return result

    async def media_to_expire(self, finished_before: float, limit: int = 500) -> list[Job]:
        """Finished jobs older than the retention window whose files are still on disk."""
        return await self._select(
            f"WHERE status IN ({_marks(TERMINAL)}) AND finished_at < ? AND media_expired_at IS NULL "
            "AND deleted_at IS NULL ORDER BY finished_at LIMIT ?",
            (*(s.value for s in TERMINAL), finished_before, limit),
        )

    async def remote_ids_since(self, since: float, *, excluding: str) -> list[str]:
        """Remote ids of jobs created since `since`, other than `excluding` (what a lookup must not adopt)."""
        async with self._conn.execute(
            "SELECT remote_id FROM jobs WHERE created_at >= ? AND id != ? AND remote_id IS NOT NULL", (since, excluding)
        ) as cur:
            ids = [row[0] for row in await cur.fetchall()]
        async with self._conn.execute(
            "SELECT state_json FROM jobs WHERE created_at >= ? AND id != ? AND state_json LIKE '%failed_remote_ids%'",
            (since, excluding),
        ) as cur:
            for row in await cur.fetchall():
                ids.extend(json.loads(row[0]).get("failed_remote_ids", []))
        return ids

    # --- the web gallery (storage.gallery holds the contract a PostgreSQL store mirrors) -------

    async def gallery(self, query: GalleryQuery) -> list[Job]:
        """One page of the gallery: newest first, filtered, searched, after `query.before`."""
        tail, args = gallery.page_sql(query)
        return await self._select(tail, args)

    async def gallery_facets(self, query: GalleryQuery) -> dict[str, list[tuple[str, str | None]]]:
        """What the gallery's filters offer in the query's scope: users as (id, display name),
        channels and pipelines as (value, None)."""
        found: dict[str, list[tuple[str, str | None]]] = {}
        for name, (sql, args) in gallery.facets_sql(query).items():
            async with self._conn.execute(sql, tuple(args)) as cur:
                found[name] = [(row[0], row[1] if len(row) > 1 else None) for row in await cur.fetchall()]
        return found

    async def children(self, job_id: str) -> list[Job]:
        return await self._select("WHERE parent_id = ? ORDER BY created_at", (job_id,))

    async def events(self, job_id: str) -> list[JobEvent]:
        async with self._conn.execute(
            "SELECT at, status, progress, detail, runner FROM job_events WHERE job_id = ? ORDER BY id", (job_id,)
        ) as cur:
            return [JobEvent(dict(row)) for row in await cur.fetchall()]

    async def count(self, *, statuses: Iterable[JobStatus], platform: str | None = None, user_id: str | None = None) -> int:
        values = [s.value for s in statuses]
        sql = f"SELECT COUNT(*) FROM jobs WHERE status IN ({_marks(values)})"
        args: list[Any] = list(values)
        if platform is not None:
            sql += " AND platform = ? AND user_id = ?"
            args += [platform, user_id]
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # --- spending and outcomes (storage.spend's rules; COST_SQL is this backend's expression) ------

    async def spend_since(
        self, *, platform: str, since: float, user_id: str | None = None, workspace_id: str | None = None
    ) -> float:
        """What the jobs of a platform (one user's, one workspace's) created since `since` count."""
        sql, args = spend.spent_query(platform, since, user_id=user_id, workspace_id=workspace_id)
        async with self._conn.execute(sql, args) as cur:
            row = await cur.fetchone()
        return round(float(row[0]) if row else 0.0, 6)

    async def top_spenders(self, *, since: float, user_id: str | None = None) -> list[Spender]:
        """What each user spent since `since` (per platform and workspace), dearest first."""
        sql = (
            f"SELECT platform, user_id, workspace_id, COUNT(*), COALESCE(SUM({spend.COST_SQL}), 0) FROM jobs "
            "WHERE created_at >= ?"
        )
        args: list[Any] = [since]
        if user_id is not None:
            sql += " AND user_id = ?"
            args.append(user_id)
        sql += " GROUP BY platform, user_id, workspace_id ORDER BY 5 DESC, 1, 2"
        async with self._conn.execute(sql, args) as cur:
            return [
                Spender(platform=r[0], user_id=r[1], workspace_id=r[2], jobs=int(r[3]), spent=float(r[4]))
                for r in await cur.fetchall()
            ]

    async def job_outcomes(
        self, *, since: float, exclude_kinds: Collection[JobKind] = (), platform: str | None = None,
        workspace_id: str | None = None, scoped: bool = False, include_scenes: bool = True,
    ) -> list[JobOutcome]:
        """Every job created since `since` (but those of `exclude_kinds`), by pipeline, with what it
        cost. `scoped`: one tenant's (platform and workspace, None matching None). Without
        `include_scenes` a story's scenes are left out (their story counts for them)."""
        kinds = [k.value for k in exclude_kinds]
        sql = (
            f"SELECT pipeline, status, created_at, finished_at, {spend.COST_SQL}, "
            "COALESCE(json_extract(state_json, '$.gpu_seconds'), 0), user_id, json_extract(origin_json, '$.user_name'), "
            "json_extract(state_json, '$.ab.split'), json_extract(state_json, '$.ab.arm') FROM jobs WHERE created_at >= ?"
        )
        args: list[Any] = [since]
        if kinds:
            sql += f" AND kind NOT IN ({_marks(kinds)})"
            args += kinds
        if scoped:
            sql += " AND platform = ? AND workspace_id IS ?"
            args += [platform, workspace_id]
        if not include_scenes:
            sql += " AND json_extract(state_json, '$.story_scene') IS NULL AND json_extract(state_json, '$.take') IS NULL"
        sql += " ORDER BY pipeline, created_at"
        async with self._conn.execute(sql, args) as cur:
            return [
                JobOutcome(
                    pipeline=r[0], status=JobStatus(r[1]), created_at=r[2], finished_at=r[3], cost=float(r[4] or 0),
                    gpu_seconds=float(r[5] or 0), user_id=r[6], user_name=_text(r[7]), ab_split=_text(r[8]), ab_arm=_text(r[9]),
                )  # fmt: skip
                for r in await cur.fetchall()
            ]

    async def remote_jobs(
        self, *, platform: str | None = None, workspace_id: str | None = None, scoped: bool = False,
        provider: str | None = None, remote_id: str | None = None, limit: int = 500,
    ) -> list[RemoteRef]:
        """Jobs with a provider-side id, newest first: all, one tenant's (`scoped`), one provider's,
        or the one with `remote_id`."""
        sql, args = "SELECT remote_id, id, status FROM jobs WHERE remote_id IS NOT NULL", []  # type: ignore[var-annotated]
        if scoped:
            sql += " AND platform = ? AND workspace_id IS ?"
            args += [platform, workspace_id]
        if provider is not None:
            sql += " AND provider = ?"
            args.append(provider)
        if remote_id is not None:
            sql += " AND remote_id = ?"
            args.append(remote_id)
        async with self._conn.execute(sql + " ORDER BY created_at DESC, rowid DESC LIMIT ?", (*args, limit)) as cur:
            return [RemoteRef(remote_id=r[0], job_id=r[1], status=JobStatus(r[2])) for r in await cur.fetchall()]

    async def lease_holders(self) -> list[LeaseHolder]:
        """Who holds leases on unfinished jobs, most jobs first."""
        terminal = [s.value for s in TERMINAL]
        async with self._conn.execute(
            f"SELECT lease_owner, COUNT(*), MAX(lease_until) FROM jobs WHERE lease_owner IS NOT NULL "
            f"AND status NOT IN ({_marks(terminal)}) GROUP BY lease_owner ORDER BY 2 DESC, 1",
            terminal,
        ) as cur:
            return [LeaseHolder(owner=r[0], jobs=int(r[1]), until=r[2]) for r in await cur.fetchall()]

    async def _select(self, tail: str, args: Sequence[Any]) -> list[Job]:
        async with self._conn.execute(f"SELECT * FROM jobs {tail}", tuple(args)) as cur:
            return [_from_row(row) for row in await cur.fetchall()]


def _event(
    conn: sqlite3.Connection, job_id: str, status: JobStatus, progress: int | None, detail: str | None, at: float,
    runner: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO job_events (job_id, at, status, progress, detail, runner) VALUES (?, ?, ?, ?, ?, ?)",
        (job_id, at, status.value, progress, detail, runner),
    )


def _explain_refusal(conn: sqlite3.Connection, job_id: str, fence: str | None) -> None:
    row = conn.execute("SELECT status, lease_owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
    if row is None:
        raise KeyError(job_id)
    if JobStatus(row["status"]) in TERMINAL:
        raise AlreadyFinished(job_id, f"already {row['status']}")
    raise LeaseLost(job_id, f"lease now held by {row['lease_owner']}, not {fence}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _marks(values: Iterable[object]) -> str:
    return ", ".join("?" for _ in values)


def _to_row(job: Job) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for col in _PLAIN_COLUMNS:
        value = getattr(job, col)
        row[col] = value.value if isinstance(value, (JobStatus, JobKind)) else value
    for col in _ORIGIN_COLUMNS:
        row[col] = getattr(job.origin, col)
    row["origin_json"] = json.dumps({"extra": job.origin.extra, "user_name": job.origin.user_name})
    row["params_json"] = job.params.model_dump_json()
    row["state_json"] = json.dumps(job.state)
    return row


def _from_row(row: sqlite3.Row) -> Job:
    data = dict(row)
    origin_blob = json.loads(data.pop("origin_json") or "{}")
    origin = Origin(
        **{c: data.pop(c) for c in _ORIGIN_COLUMNS},
        extra=origin_blob.get("extra", {}),
        user_name=origin_blob.get("user_name"),
    )
    params = GenerateParams.model_validate_json(data.pop("params_json"))
    state = json.loads(data.pop("state_json") or "{}")
    return Job(origin=origin, params=params, state=state, **data)
