"""Open the SQLite database in WAL mode and bring its schema up to date.

Migrations are `storage/migrations/NNNN_name.sql`, applied in order; the schema
version is `PRAGMA user_version`. A database written by a newer videobot is
refused rather than silently used or downgraded.
"""
from __future__ import annotations

import re
import sqlite3
from importlib import resources
from pathlib import Path

import aiosqlite

from storage.errors import DatabaseTooNew

__all__ = ["DatabaseTooNew", "LATEST_VERSION", "connect", "migrate", "migrations"]

_MIGRATION_RE = re.compile(r"^(\d{4})_[\w-]+\.sql$")


def migrations(folder_name: str = "migrations") -> list[tuple[int, str]]:
    """The numbered SQL files of a migrations folder in the `storage` package, in order (both
    backends keep theirs this way: `migrations` for SQLite, `pg_migrations` for PostgreSQL)."""
    folder = resources.files("storage") / folder_name
    found = []
    for entry in folder.iterdir():
        m = _MIGRATION_RE.match(entry.name)
        if m:
            found.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    found.sort()
    for expected, (number, _) in enumerate(found, start=1):
        if number != expected:
            raise RuntimeError(f"{folder_name}: migration numbers must run 1..N without gaps; found {number} at {expected}")
    return found


LATEST_VERSION = len(migrations())


async def connect(path: Path) -> aiosqlite.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = await aiosqlite.connect(path, isolation_level=None)
    conn.row_factory = aiosqlite.Row
    try:
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=10000")
        await migrate(conn, path)
    except BaseException:
        await conn.close()
        raise
    return conn


async def migrate(conn: aiosqlite.Connection, path: Path | str = "database") -> int:
    async with conn.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    steps = migrations()
    if current > len(steps):
        raise DatabaseTooNew(
            f"{path} was written by a newer videobot (schema {current}, this one knows {len(steps)}). "
            "Upgrade videobot or point VIDEOBOT_DATA_DIR elsewhere."
        )
    for number, sql in steps[current:]:
        # One transaction per migration: a crash leaves the previous version intact.
        await conn.execute("BEGIN IMMEDIATE")
        try:
            await _run_script(conn, sql)
            await conn.execute(f"PRAGMA user_version={number}")
            await conn.execute("COMMIT")
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
    return len(steps)


async def _run_script(conn: aiosqlite.Connection, sql: str) -> None:
    # executescript() would COMMIT our transaction first; run statement by statement instead.
    for statement in _split_sql(sql):
        await conn.execute(statement)


def _split_sql(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    statements: list[str] = []
    current = ""
    for part in "\n".join(lines).split(";"):
        current += part + ";"
        # A trigger's body holds `;`s of its own: a statement ends where SQLite says it is complete.
        if sqlite3.complete_statement(current):
            if current.strip(" \n;"):
                statements.append(current.strip().removesuffix(";").strip())
            current = ""
    if current.strip(" \n;"):
        statements.append(current.strip().removesuffix(";").strip())
    return statements
