"""Workspace installations, OAuth states and token-refresh locks: the SQLite side, and the door to
either backend (`installations_of(store)`).

The rows hold what the bot hands over: `secret` is ciphertext (the bot encrypts every token before
it gets here), `expires_at` the bot token's expiry in clear so a refresher can tell what is due.
An OAuth state is consumed at most once (deleted as it is checked). A lock is a row with a holder
and an end time: taken when free or lapsed, so a process that died holding it blocks no one long.
"""
from __future__ import annotations

import sqlite3
import time
from typing import TYPE_CHECKING

from storage.models import InstallationRow

if TYPE_CHECKING:
    from storage.contract import InstallationRows, Store
    from storage.writer import GroupWriter


def installations_of(store: Store) -> InstallationRows:
    """The installation rows of the store's database, on its backend."""
    if store.backend == "postgresql":
        from storage.pg.installations import PgInstallations

        return PgInstallations(store.pool)  # type: ignore[attr-defined]
    return SqliteInstallations(store.writer)  # type: ignore[attr-defined]


_COLUMNS = "platform, enterprise_id, team_id, is_enterprise_install, secret, expires_at, installed_at, updated_at"


def _row(r: sqlite3.Row | tuple[object, ...]) -> InstallationRow:
    return InstallationRow(
        platform=str(r[0]), enterprise_id=str(r[1]), team_id=str(r[2]), is_enterprise_install=bool(r[3]), secret=str(r[4]),
        expires_at=float(r[5]) if r[5] is not None else None, installed_at=float(r[6]), updated_at=float(r[7]),  # type: ignore[arg-type]
    )  # fmt: skip


class SqliteInstallations:
    """Every call through the store's one writer (reads too: they are few, and then always see the
    writes before them)."""

    def __init__(self, writer: GroupWriter) -> None:
        self._writer = writer

    async def save(self, row: InstallationRow) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO installations ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, enterprise_id, team_id) DO UPDATE SET is_enterprise_install = excluded.is_enterprise_install, "
                "secret = excluded.secret, expires_at = excluded.expires_at, updated_at = excluded.updated_at",
                (row.platform, row.enterprise_id, row.team_id, int(row.is_enterprise_install), row.secret, row.expires_at,
                 row.installed_at, row.updated_at),
            )  # fmt: skip

        await self._writer.run(write)

    async def find(self, platform: str, enterprise_id: str, team_id: str) -> InstallationRow | None:
        def read(conn: sqlite3.Connection) -> InstallationRow | None:
            r = conn.execute(
                f"SELECT {_COLUMNS} FROM installations WHERE platform = ? AND enterprise_id = ? AND team_id = ?",
                (platform, enterprise_id, team_id),
            ).fetchone()
            return _row(r) if r else None

        result: InstallationRow | None = await self._writer.run(read)
        return result

    async def all(self, platform: str) -> list[InstallationRow]:
        def read(conn: sqlite3.Connection) -> list[InstallationRow]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM installations WHERE platform = ? ORDER BY installed_at", (platform,))
            return [_row(r) for r in rows.fetchall()]

        result: list[InstallationRow] = await self._writer.run(read)
        return result

    async def delete(self, platform: str, enterprise_id: str, team_id: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "DELETE FROM installations WHERE platform = ? AND enterprise_id = ? AND team_id = ?", (platform, enterprise_id, team_id)
            )
            return cur.rowcount > 0

        result: bool = await self._writer.run(write)
        return result

    async def issue_state(self, state: str, expires_at: float) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM oauth_states WHERE expires_at < ?", (time.time(),))
            conn.execute("INSERT INTO oauth_states (state, expires_at) VALUES (?, ?)", (state, expires_at))

        await self._writer.run(write)

    async def consume_state(self, state: str) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            cur = conn.execute("DELETE FROM oauth_states WHERE state = ? AND expires_at >= ?", (state, time.time()))
            return cur.rowcount > 0

        result: bool = await self._writer.run(write)
        return result

    async def try_lock(self, name: str, holder: str, seconds: float) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            now = time.time()
            cur = conn.execute(
                "INSERT INTO installation_locks (name, holder, until) VALUES (?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until "
                "WHERE installation_locks.until < ? OR installation_locks.holder = excluded.holder",
                (name, holder, now + seconds, now),
            )
            return cur.rowcount > 0

        result: bool = await self._writer.run(write)
        return result

    async def unlock(self, name: str, holder: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM installation_locks WHERE name = ? AND holder = ?", (name, holder))

        await self._writer.run(write)
