"""The typed job repository. Every status change writes the row and a `job_events` line
in one transaction, so the history and the row never disagree."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bot.core.models import GenerateParams, Job, JobKind, JobStatus, Origin, TERMINAL
from storage.db import connect

_ORIGIN_COLUMNS = ("platform", "workspace_id", "channel_id", "user_id", "status_message_id", "result_message_id")
_PLAIN_COLUMNS = (
    "id", "parent_id", "kind", "prompt", "pipeline", "provider", "model", "remote_id", "status", "progress",
    "cost_estimate", "cost_actual", "output_path", "thumbnail_path", "error_code", "error_message",
    "created_at", "started_at", "finished_at", "updated_at", "deleted_at",
)  # fmt: skip
_UPDATABLE = set(_PLAIN_COLUMNS) - {"id", "created_at"} | {"status_message_id", "result_message_id"}


class JobEvent(dict[str, Any]):
    """One row of a job's history: at, status, progress, detail."""


class JobStore:
    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn
        # aiosqlite serialises statements, not transactions: keep each BEGIN..COMMIT whole.
        self._tx = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> JobStore:
        return cls(await connect(path))

    async def close(self) -> None:
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

        await asyncio.shield(asyncio.ensure_future(run()))

    async def update(self, job_id: str, *, detail: str | None = None, **fields: Any) -> Job:
        """Write fields; a status change also appends an event. Returns the job as stored."""
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
        async def write() -> None:
            cur = await self._conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*(v for _, v in sets), job_id))
            if cur.rowcount == 0:
                raise KeyError(job_id)
            if status is not None or detail is not None:
                async with self._conn.execute("SELECT status, progress FROM jobs WHERE id = ?", (job_id,)) as c:
                    row = await c.fetchone()
                await self._event(job_id, JobStatus(row["status"]), row["progress"], detail, now)

        await self._transaction(write)
        job = await self.get(job_id)
        assert job is not None
        return job

    async def set_progress(self, job_id: str, progress: int) -> None:
        # Progress ticks are not history: no event row, no transaction of their own.
        await self._conn.execute(
            "UPDATE jobs SET progress = ?, updated_at = ? WHERE id = ?", (progress, time.time(), job_id)
        )

    async def _event(self, job_id: str, status: JobStatus, progress: int | None, detail: str | None, at: float) -> None:
        await self._conn.execute(
            "INSERT INTO job_events (job_id, at, status, progress, detail) VALUES (?, ?, ?, ?, ?)",
            (job_id, at, status.value, progress, detail),
        )

    # --- leases: one runner owns a job at a time, across processes -------------------------

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> bool:
        now = time.time()
        cur = await self._conn.execute(
            "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE id = ? AND status NOT IN ({}) "
            "AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)".format(_marks(TERMINAL)),
            (owner, now + lease_seconds, job_id, *(s.value for s in TERMINAL), owner, now),
        )
        return cur.rowcount == 1

    async def renew(self, owner: str, job_ids: Sequence[str], lease_seconds: float) -> None:
        if not job_ids:
            return
        await self._conn.execute(
            f"UPDATE jobs SET lease_until = ? WHERE lease_owner = ? AND id IN ({_marks(job_ids)})",
            (time.time() + lease_seconds, owner, *job_ids),
        )

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
    data.pop("lease_owner", None)
    data.pop("lease_until", None)
    return Job(origin=origin, params=params, state=state, **data)
