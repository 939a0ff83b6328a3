"""The job store on SQLite (the embedded default): storage.base's contract over an aiosqlite
connection for reads and one group-committing writer thread for writes (storage.writer).

What is SQLite's own here: how a write script runs (synchronously, on the writer thread,
inside the batch's `BEGIN IMMEDIATE` transaction: SQLite's write lock serialises processes,
so no advisory locks are needed), the claim (one transaction under that lock), and signals
(no notifications: `wait_for_signal` polls, or wakes at once for this process's own).
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from storage.base import JobEvent, SqlStore
from storage.claims import fair_pick
from storage.db import connect
from storage.errors import AlreadyFinished, LeaseLost, StaleWrite
from storage.media_paths import MediaPaths
from storage.models import Job
from storage.rows import ORIGIN_COLUMNS, PLAIN_COLUMNS, UPDATABLE, RowMapper
from storage.sql import SQLITE, Row, Script, Stmt, Where, Write
from storage.writer import GroupWriter, WriteFn

# Kept importable from here for the callers that still do (they live in storage.errors / storage.rows now).
__all__ = ["AlreadyFinished", "JobEvent", "JobStore", "LeaseLost", "ORIGIN_COLUMNS", "PLAIN_COLUMNS", "StaleWrite", "UPDATABLE"]


def drive(write: Write) -> WriteFn:
    """A write script as the writer's synchronous function of its connection."""

    def run(conn: sqlite3.Connection) -> Any:
        script = write.make()
        try:
            stmt = next(script)
            while True:
                stmt = script.send(conn.execute(stmt.sql, tuple(stmt.args)).fetchall())
        except StopIteration as done:
            return done.value

    return run


class JobStore(SqlStore):
    """Reads on an aiosqlite connection; every write through one group-committing writer
    (`storage.writer`), each write one script run in a single thread hop."""

    backend = "sqlite"
    dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection, writer: GroupWriter, *, media_root: Path | None = None) -> None:
        self._conn = conn
        self._writer = writer
        self._closed = False
        self.rows = RowMapper(json_text=True, paths=MediaPaths(media_root) if media_root is not None else None)
        #: Set when this store publishes a signal: a waiter in this process need not poll for it.
        self._published = asyncio.Event()

    @classmethod
    async def open(cls, path: Path, *, media_root: Path | None = None) -> JobStore:
        conn = await connect(path)  # migrates
        writer = GroupWriter(path)
        try:
            await writer.open()
        except BaseException:
            await conn.close()
            raise
        return cls(conn, writer, media_root=media_root)

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

    async def _read(self, sql: str, args: Sequence[Any] = ()) -> list[Row]:
        async with self._conn.execute(sql, tuple(args)) as cur:
            return list(await cur.fetchall())

    async def _run(self, write: Write) -> Any:
        return await self._writer.run(drive(write))

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

        def script() -> Script[list[Job]]:
            now = time.time()
            taken, candidates = self.claim_figures((yield self.claim_read(names, now, depth=min(max_running_per_user, limit))))
            chosen = fair_pick(
                candidates, taken, taken_total=sum(taken.values()), max_running=max_running,
                max_running_per_user=max_running_per_user, limit=limit,
            )  # fmt: skip
            if not chosen:
                return []
            match = Where().extend(self.dialect.any("id", chosen))
            stored = yield Stmt(f"UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE {match.sql} RETURNING *", [owner, now + lease_seconds, *match.args])
            got = {r["id"]: self.rows.from_row(r) for r in stored}
            return [got[job_id] for job_id in chosen]

        result: list[Job] = await self._script(script)
        return result

    async def publish(self, job_id: str, kind: str, payload: dict[str, Any]) -> None:
        def script() -> Script[None]:
            yield Stmt(
                "INSERT INTO job_signals (job_id, kind, payload_json, at) VALUES (?, ?, ?, ?)",
                (job_id, kind, self.rows.encode(payload), time.time()),
            )

        await self._script(script)
        self._published.set()

    async def wait_for_signal(self, timeout: float) -> None:
        """SQLite has no notifications: return after min(timeout, 0.2 s), or at once when this
        store published meanwhile; the caller then reads `signals_after` its cursor."""
        try:
            await asyncio.wait_for(self._published.wait(), max(0.0, min(timeout, 0.2)))
        except TimeoutError:
            return
        # Cleared only after a wake-up, so a publish made while the caller was reading is not missed.
        self._published.clear()



