"""`videobot db copy`: move a history from one store to another (SQLite to PostgreSQL, or back).

What is copied: jobs (every column of storage.rows.JOB_COLUMNS: lease, story scene, image step cost
and privacy included), their events (in order, with the runner
that wrote each), settings and pending spends (confirmations). Signals and worker rows are
transient and stay behind.

Safe to run again: a job already in the target is left as it is (with its events: a job and
its events are written in one transaction, batch by batch), settings and pending spends keep
the target's row on a clash, so a copy that was interrupted is finished by running it again,
and a finished one copies nothing more. A target holding jobs the source does not have is
somebody else's history: refused unless `append`. Both schemas are migrated first. Stop
the bot on the source while copying, or jobs it changes after their batch keep their older copy.
"""
from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage.errors import TargetNotEmpty
from storage.open import is_postgres, sqlite_path
from storage.rows import JOB_COLUMNS

JSON_COLUMNS = {
    "jobs": ("origin_json", "params_json", "state_json"),
    "pending_spends": ("job_json",),
    "settings": ("value_json",),
}
EVENT_COLUMNS = ("job_id", "at", "status", "progress", "detail", "runner")
SETTING_COLUMNS = ("platform", "workspace_id", "scope", "scope_id", "key", "value_json", "updated_by", "updated_at")
PENDING_COLUMNS = ("token", "platform", "user_id", "job_json", "estimate", "created_at", "expires_at", "state")
BATCH = 500


@dataclass
class CopyReport:
    jobs: int = 0
    events: int = 0
    skipped_jobs: int = 0
    settings: int = 0
    pending: int = 0
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        line = (
            f"copied {self.jobs} jobs with {self.events} events, {self.settings} settings, {self.pending} pending confirmations"
        )
        if self.skipped_jobs:
            line += f"; {self.skipped_jobs} jobs were already there (left as they are)"
        return line


Row = dict[str, Any]


class _Side:
    """One database, read or written as plain rows (JSON columns as Python values)."""

    async def job_ids(self) -> set[str]: ...
    def jobs(self) -> AsyncIterator[list[Row]]: ...
    async def events_of(self, job_ids: Sequence[str]) -> list[Row]: ...
    async def table(self, name: str, columns: Sequence[str]) -> list[Row]: ...
    async def write_jobs(self, jobs: list[Row], events: list[Row]) -> tuple[int, int]: ...
    async def write_rows(self, name: str, columns: Sequence[str], rows: list[Row], key: Sequence[str]) -> int: ...
    async def close(self) -> None: ...


class _Sqlite(_Side):
    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA busy_timeout=10000")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def job_ids(self) -> set[str]:
        return await self._run(lambda: {r[0] for r in self.conn.execute("SELECT id FROM jobs")})

    async def jobs(self) -> AsyncIterator[list[Row]]:
        after = 0
        while True:
            rows = await self._run(
                lambda a: self.conn.execute(
                    f"SELECT rowid AS _seq, {', '.join(JOB_COLUMNS)} FROM jobs WHERE rowid > ? ORDER BY rowid LIMIT ?", (a, BATCH)
                ).fetchall(),
                after,
            )
            if not rows:
                return
            after = rows[-1]["_seq"]
            yield [_decode("jobs", {k: r[k] for k in JOB_COLUMNS}) for r in rows]

    async def events_of(self, job_ids: Sequence[str]) -> list[Row]:
        marks = ", ".join("?" for _ in job_ids)
        rows = await self._run(
            lambda: self.conn.execute(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM job_events WHERE job_id IN ({marks}) ORDER BY id", tuple(job_ids)
            ).fetchall()
        )
        return [dict(r) for r in rows]

    async def table(self, name: str, columns: Sequence[str]) -> list[Row]:
        rows = await self._run(lambda: self.conn.execute(f"SELECT {', '.join(columns)} FROM {name} ORDER BY rowid").fetchall())
        return [_decode(name, dict(r)) for r in rows]

    async def write_jobs(self, jobs: list[Row], events: list[Row]) -> tuple[int, int]:
        def write() -> tuple[int, int]:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute("PRAGMA defer_foreign_keys=ON")
                ids = [j["id"] for j in jobs]
                marks = ", ".join("?" for _ in ids)
                there = {r[0] for r in self.conn.execute(f"SELECT id FROM jobs WHERE id IN ({marks})", ids)}
                new = [j for j in jobs if j["id"] not in there]
                self.conn.executemany(
                    f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({', '.join('?' for _ in JOB_COLUMNS)})",
                    [tuple(_encode("jobs", j)[c] for c in JOB_COLUMNS) for j in new],
                )
                fresh = {j["id"] for j in new}
                mine = [e for e in events if e["job_id"] in fresh]
                self.conn.executemany(
                    f"INSERT INTO job_events ({', '.join(EVENT_COLUMNS)}) VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})",
                    [tuple(e[c] for c in EVENT_COLUMNS) for e in mine],
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            return len(new), len(mine)

        result: tuple[int, int] = await self._run(write)
        return result

    async def write_rows(self, name: str, columns: Sequence[str], rows: list[Row], key: Sequence[str]) -> int:
        def write() -> int:
            cur = self.conn.executemany(
                f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
                f"ON CONFLICT ({', '.join(key)}) DO NOTHING",
                [tuple(_encode(name, r)[c] for c in columns) for r in rows],
            )
            return int(cur.rowcount)

        result: int = await self._run(write)
        return result

    async def close(self) -> None:
        self.conn.close()


class _Postgres(_Side):
    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def job_ids(self) -> set[str]:
        async with self.pool.acquire() as conn:
            return {r[0] for r in await conn.fetch("SELECT id FROM jobs")}

    async def jobs(self) -> AsyncIterator[list[Row]]:
        after = 0
        while True:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(
                    f"SELECT seq, {', '.join(JOB_COLUMNS)} FROM jobs WHERE seq > $1 ORDER BY seq LIMIT $2", after, BATCH
                )
            if not rows:
                return
            after = rows[-1]["seq"]
            yield [{k: r[k] for k in JOB_COLUMNS} for r in rows]

    async def events_of(self, job_ids: Sequence[str]) -> list[Row]:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(
                f"SELECT {', '.join(EVENT_COLUMNS)} FROM job_events WHERE job_id = ANY($1::text[]) ORDER BY id", list(job_ids)
            )
        return [dict(r) for r in rows]

    async def table(self, name: str, columns: Sequence[str]) -> list[Row]:
        async with self.pool.acquire() as conn:
            return [dict(r) for r in await conn.fetch(f"SELECT {', '.join(columns)} FROM {name} ORDER BY ctid")]

    async def write_jobs(self, jobs: list[Row], events: list[Row]) -> tuple[int, int]:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET CONSTRAINTS ALL DEFERRED")  # a child may come before its parent
            there = {r[0] for r in await conn.fetch("SELECT id FROM jobs WHERE id = ANY($1::text[])", [j["id"] for j in jobs])}
            new = [j for j in jobs if j["id"] not in there]
            await conn.executemany(
                f"INSERT INTO jobs ({', '.join(JOB_COLUMNS)}) VALUES ({_dollars(JOB_COLUMNS, 'jobs')})",
                [tuple(j[c] for c in JOB_COLUMNS) for j in new],
            )
            fresh = {j["id"] for j in new}
            mine = [e for e in events if e["job_id"] in fresh]
            await conn.executemany(
                f"INSERT INTO job_events ({', '.join(EVENT_COLUMNS)}) VALUES ({_dollars(EVENT_COLUMNS, 'job_events')})",
                [tuple(e[c] for c in EVENT_COLUMNS) for e in mine],
            )
        return len(new), len(mine)

    async def write_rows(self, name: str, columns: Sequence[str], rows: list[Row], key: Sequence[str]) -> int:
        written = 0
        async with self.pool.acquire() as conn, conn.transaction():
            for row in rows:
                status = await conn.execute(
                    f"INSERT INTO {name} ({', '.join(columns)}) VALUES ({_dollars(columns, name)}) "
                    f"ON CONFLICT ({', '.join(key)}) DO NOTHING",
                    *(row[c] for c in columns),
                )
                written += int(status.split()[-1])
        return written

    async def close(self) -> None:
        return None


def _dollars(columns: Sequence[str], table: str) -> str:
    json_columns = JSON_COLUMNS.get(table, ())
    return ", ".join(f"${i}::jsonb" if c in json_columns else f"${i}" for i, c in enumerate(columns, start=1))


def _decode(table: str, row: Row) -> Row:
    for col in JSON_COLUMNS.get(table, ()):
        if isinstance(row.get(col), str):
            row[col] = json.loads(row[col])
    if table == "jobs":
        row["private"] = bool(row["private"])  # SQLite's 0/1, PostgreSQL's boolean
    return row


def _encode(table: str, row: Row) -> Row:
    out = dict(row)
    for col in JSON_COLUMNS.get(table, ()):
        if col in out:
            out[col] = json.dumps(out[col])
    return out


async def _open_side(url: str, data_dir: Path) -> tuple[Any, _Side]:
    """The store (opened so its schema is migrated) and a raw view of its tables."""
    from storage.open import open_store

    store = await open_store(url, data_dir=data_dir)
    if is_postgres(url):
        return store, _Postgres(store.pool)  # type: ignore[attr-defined]
    path = sqlite_path(url, data_dir)
    assert path is not None
    return store, _Sqlite(path)


async def copy_database(source_url: str, target_url: str, *, data_dir: Path, append: bool = False) -> CopyReport:
    if source_url.strip() == target_url.strip():
        raise ValueError("--from and --to name the same database")
    source_store, source = await _open_side(source_url, data_dir)
    try:
        target_store, target = await _open_side(target_url, data_dir)
        try:
            return await _copy(source, target, append=append)
        finally:
            await target.close()
            await target_store.close()
    finally:
        await source.close()
        await source_store.close()


async def _copy(source: _Side, target: _Side, *, append: bool) -> CopyReport:
    report = CopyReport()
    foreign = await target.job_ids() - await source.job_ids()
    if foreign and not append:
        raise TargetNotEmpty(
            f"the target already holds {len(foreign)} jobs that are not in the source; pass --append to add to it anyway"
        )
    async for batch in source.jobs():
        events = await source.events_of([j["id"] for j in batch])
        copied, copied_events = await target.write_jobs(batch, events)
        report.jobs += copied
        report.events += copied_events
        report.skipped_jobs += len(batch) - copied
    report.settings = await target.write_rows(
        "settings", SETTING_COLUMNS, await source.table("settings", SETTING_COLUMNS),
        ("platform", "workspace_id", "scope", "scope_id", "key"),
    )  # fmt: skip
    report.pending = await target.write_rows(
        "pending_spends", PENDING_COLUMNS, await source.table("pending_spends", PENDING_COLUMNS), ("token",)
    )
    return report
