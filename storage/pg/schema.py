"""Bring a PostgreSQL database's schema up to date, or refuse one written by a newer videobot.

Migrations are `storage/pg_migrations/NNNN_name.sql`, applied in order, each in its own
transaction (PostgreSQL's DDL is transactional: a crash leaves the previous version). The
version is the one row of `videobot_schema`. Processes starting at once take turns on an
advisory lock. A database whose version is above what this videobot knows is refused before
anything is written to it.
"""
from __future__ import annotations

import asyncpg

from storage.db import migrations as sql_migrations
from storage.errors import DatabaseTooNew
from storage.pg.locks import MIGRATE, NAMESPACE

VERSION_TABLE = "videobot_schema"


def migrations() -> list[tuple[int, str]]:
    return sql_migrations("pg_migrations")


LATEST_VERSION = len(migrations())


async def current_version(conn: asyncpg.Connection) -> int:
    """0 for an empty database."""
    # A plain MVCC read of the catalog, not to_regclass(): after waiting on an advisory lock the
    # backend's catalog cache may still hold "no such table" from before another process made it.
    exists = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE schemaname = current_schema() AND tablename = $1)",
        VERSION_TABLE,
    )  # fmt: skip
    if not exists:
        return 0
    return int(await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"))


async def migrate(conn: asyncpg.Connection, where: str = "the database") -> tuple[int, int]:
    """Apply what is missing; returns (version before, version after)."""
    steps = migrations()
    async with conn.transaction():
        # Held to the end of this transaction: another process migrating waits here, then finds it done.
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", NAMESPACE, MIGRATE)
        before = await current_version(conn)
    if before > len(steps):
        raise DatabaseTooNew(
            f"{where} was written by a newer videobot (schema {before}, this one knows {len(steps)}). "
            "Upgrade videobot or point VIDEOBOT_DATABASE_URL elsewhere."
        )
    version = before
    for number, sql in steps[before:]:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", NAMESPACE, MIGRATE)
            if await current_version(conn) >= number:  # another process applied it meanwhile
                continue
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER NOT NULL)")
            await conn.execute(sql)
            await conn.execute(f"DELETE FROM {VERSION_TABLE}")
            await conn.execute(f"INSERT INTO {VERSION_TABLE} (version) VALUES ($1)", number)
        version = number
    return before, max(version, await current_version(conn))
