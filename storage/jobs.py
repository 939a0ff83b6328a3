"""The typed job repository. Every status change writes the row and a `job_events` line
in one transaction, so the history and the row never disagree."""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from storage.leases import HolderState, holder_state
from storage.models import TERMINAL, GenerateParams, Job, JobKind, JobStatus, Origin
from storage.db import connect

_ORIGIN_COLUMNS = ("platform", "workspace_id", "channel_id", "user_id", "status_message_id", "result_message_id")
_PLAIN_COLUMNS = (
    "id", "parent_id", "kind", "prompt", "pipeline", "provider", "model", "remote_id", "status", "progress",
    "cost_estimate", "cost_actual", "output_path", "thumbnail_path", "error_code", "error_message",
    "created_at", "started_at", "finished_at", "updated_at", "deleted_at",
)  # fmt: skip
log = logging.getLogger(__name__)
_UPDATABLE = set(_PLAIN_COLUMNS) - {"id", "created_at"} | {"status_message_id", "result_message_id"}


class JobEvent(dict[str, Any]):
    """One row of a job's history: at, status, progress, detail."""


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
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # aiosqlite serialises statements, not transactions: keep each BEGIN..COMMIT whole.
        self._tx = asyncio.Lock()
        #: Shielded transactions still running: close() lets them finish first.
        self._inflight: set[asyncio.Future[None]] = set()
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> JobStore:
        return cls(await connect(path))

    async def close(self) -> None:
        """Let writes that are under way commit, then close. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)
        await self._conn.close()

    # --- writes ---------------------------------------------------------------------------

    async def create(self, job: Job) -> Job:
        row = _to_row(job)
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)

        async def write() -> None:
            await self._conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({marks})", tuple(row.values()))
            await self._event(job.id, job.status, job.progress, None, job.created_at)

        await self._transaction(write)
        return job

    async def _transaction(self, body: Callable[[], Awaitable[None]]) -> None:
        """Run `body` in one transaction that a cancelled caller cannot cut in half.

        Shielded: when the runner is stopped mid-write, the write still commits (or
        rolls back) whole, and the caller sees its cancellation, not a SQLite error.
        """

        async def run() -> None:
            async with self._tx:
                await self._conn.execute("BEGIN IMMEDIATE")
                try:
                    await body()
                    await self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        await self._conn.execute("ROLLBACK")
                    raise

        future = asyncio.ensure_future(run())
        self._inflight.add(future)
        future.add_done_callback(self._inflight.discard)
        await asyncio.shield(future)

    async def update(self, job_id: str, *, detail: str | None = None, fence: str | None = None, **fields: Any) -> Job:
        """Write fields; a status change also appends an event. Returns the job as stored.

        `fence`: the lease owner the write is conditional on (the runner's writes). A write
        that changes `status` never overwrites a terminal state, whoever writes it.
        Raises LeaseLost / AlreadyFinished when the condition fails; nothing is written then.
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

        async def write() -> None:
            cur = await self._conn.execute(f"UPDATE jobs SET {assignments} WHERE {where}", (*(v for _, v in sets), *args))
            if cur.rowcount == 0:
                await self._explain_refusal(job_id, fence)
            if status is not None or detail is not None:
                async with self._conn.execute("SELECT status, progress FROM jobs WHERE id = ?", (job_id,)) as c:
                    row = await c.fetchone()
                await self._event(job_id, JobStatus(row["status"]), row["progress"], detail, now)

        await self._transaction(write)
        job = await self.get(job_id)
        assert job is not None
        return job

    async def add_event(self, job_id: str, detail: str) -> None:
        """A line in the job's history that changes nothing else (a note after the end)."""

        async def write() -> None:
            async with self._conn.execute("SELECT status, progress FROM jobs WHERE id = ?", (job_id,)) as c:
                row = await c.fetchone()
            if row is not None:
                await self._event(job_id, JobStatus(row["status"]), row["progress"], detail, time.time())

        await self._transaction(write)

    async def _explain_refusal(self, job_id: str, fence: str | None) -> None:
        async with self._conn.execute("SELECT status, lease_owner FROM jobs WHERE id = ?", (job_id,)) as c:
            row = await c.fetchone()
        if row is None:
            raise KeyError(job_id)
        if JobStatus(row["status"]) in TERMINAL:
            raise AlreadyFinished(job_id, f"already {row['status']}")
        raise LeaseLost(job_id, f"lease now held by {row['lease_owner']}, not {fence}")

    async def set_progress(self, job_id: str, progress: int, *, fence: str | None = None) -> None:
        # Progress ticks are not history: no event row, no transaction of their own.
        sql = "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?"
        args: list[Any] = [progress, time.time(), job_id]
        if fence is not None:
            sql += f" AND lease_owner = ? AND status NOT IN ({_marks(TERMINAL)})"
            args += [fence, *(s.value for s in TERMINAL)]
        cur = await self._conn.execute(sql, args)
        if cur.rowcount == 0:
            await self._explain_refusal(job_id, fence)

    async def reopen_delivery(self, job_id: str, detail: str) -> Job:
        """A completed job whose result could not be posted goes back to `delivering`
        (`videobot redeliver`); the only move out of a terminal state there is."""

        async def write() -> None:
            cur = await self._conn.execute(
                "UPDATE jobs SET status = ?, error_code = NULL, error_message = NULL, finished_at = NULL, updated_at = ? "
                "WHERE id = ? AND status = ? AND error_code = 'undelivered' AND output_path IS NOT NULL",
                (JobStatus.DELIVERING.value, time.time(), job_id, JobStatus.COMPLETED.value),
            )
            if cur.rowcount == 0:
                raise AlreadyFinished(job_id, "not a completed job waiting for delivery")
            await self._event(job_id, JobStatus.DELIVERING, 100, detail, time.time())

        await self._transaction(write)
        job = await self.get(job_id)
        assert job is not None
        return job

    async def _event(self, job_id: str, status: JobStatus, progress: int | None, detail: str | None, at: float) -> None:
        await self._conn.execute(
            "INSERT INTO job_events (job_id, at, status, progress, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, at, status.value, progress, detail),
        )

    # --- leases: one runner owns a job at a time, across processes -------------------------

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        """Take the job's lease if it is free, ours, expired, or held by a process that is gone."""
        async with self._conn.execute(
            "SELECT status, lease_owner, lease_until FROM jobs WHERE id = ?", (job_id,)
        ) as cur:
            row = await cur.fetchone()
        if row is None or JobStatus(row["status"]) in TERMINAL:
            return False
        current = row["lease_owner"]
        state = holder_state(current, row["lease_until"])
        if current is not None and current != owner and state is HolderState.ALIVE:
            return False
        # Compare-and-set on the holder we judged, so two runners cannot both take it.
        cur = await self._conn.execute(
            "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ? AND lease_owner IS ? "
            f"AND status NOT IN ({_marks(TERMINAL)})",
            (owner, time.time() + lease_seconds, job_id, current, *(s.value for s in TERMINAL)),
        )
        if cur.rowcount == 1 and current is not None and current != owner:
            log.info("job %s: took over the lease from %s (%s)", job_id, current, state)
        return cur.rowcount == 1

    async def renew(self, owner: str, job_ids: Sequence[str], lease_seconds: float) -> set[str]:
        """Extend our leases; returns the ids we still hold (a missing one was lost or finished)."""
        if not job_ids:
            return set()
        held: set[str] = set()
        for chunk in _chunks(list(job_ids), 500):
            await self._conn.execute(
                f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN ({_marks(chunk)})",
                (time.time() + lease_seconds, owner, *chunk),
            )
            async with self._conn.execute(
                f"SELECT id FROM jobs WHERE lease_owner = ? AND id IN ({_marks(chunk)})", (owner, *chunk)
            ) as cur:
                held.update(row[0] for row in await cur.fetchall())
        return held

    async def release(self, owner: str, job_ids: Sequence[str] | None = None) -> None:
        if job_ids is None:
            await self._conn.execute("UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?", (owner,))
            return
        if job_ids:
            await self._conn.execute(
                f"UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ? AND id IN ({_marks(job_ids)})",
                (owner, *job_ids),
            )

    # --- reads ----------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cur:
            row = await cur.fetchone()
        return _from_row(row) if row else None

    async def find_prefix(self, prefix: str, limit: int = 2) -> list[Job]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return await self._select("WHERE id LIKE ? ESCAPE '\\' LIMIT ?", (escaped + "%", limit))

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

    async def children(self, job_id: str) -> list[Job]:
        return await self._select("WHERE parent_id = ? ORDER BY created_at", (job_id,))

    async def events(self, job_id: str) -> list[JobEvent]:
        async with self._conn.execute(
            "SELECT at, status, progress, detail FROM job_events WHERE job_id = ? ORDER BY id", (job_id,)
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

    async def aggregate(self, sql: str, args: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A read-only aggregate over the tables (sums and groups for reports)."""
        if not sql.lstrip().upper().startswith("SELECT"):
            raise ValueError("aggregate() only reads")
        async with self._conn.execute(sql, tuple(args)) as cur:
            return [tuple(row) for row in await cur.fetchall()]

    async def _select(self, tail: str, args: Sequence[Any]) -> list[Job]:
        async with self._conn.execute(f"SELECT * FROM jobs {tail}", tuple(args)) as cur:
            return [_from_row(row) for row in await cur.fetchall()]


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


def _from_row(row: aiosqlite.Row) -> Job:
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
