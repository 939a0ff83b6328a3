"""Workspace installations, OAuth states and token-refresh locks on PostgreSQL (storage/installations.py
says what they are). One statement each: atomic by itself, no transaction round trips."""
from __future__ import annotations

import time

import asyncpg

from storage.models import InstallationRow

_COLUMNS = "platform, enterprise_id, team_id, is_enterprise_install, secret, expires_at, installed_at, updated_at"


def _row(r: asyncpg.Record) -> InstallationRow:
    return InstallationRow(
        platform=r["platform"], enterprise_id=r["enterprise_id"], team_id=r["team_id"], is_enterprise_install=r["is_enterprise_install"],
        secret=r["secret"], expires_at=r["expires_at"], installed_at=r["installed_at"], updated_at=r["updated_at"],
    )  # fmt: skip


class PgInstallations:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def save(self, row: InstallationRow) -> None:
        await self._pool.execute(
            f"INSERT INTO installations ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (platform, enterprise_id, team_id) DO UPDATE SET is_enterprise_install = EXCLUDED.is_enterprise_install, "
            "secret = EXCLUDED.secret, expires_at = EXCLUDED.expires_at, updated_at = EXCLUDED.updated_at",
            row.platform, row.enterprise_id, row.team_id, row.is_enterprise_install, row.secret, row.expires_at, row.installed_at,
            row.updated_at,
        )  # fmt: skip

    async def find(self, platform: str, enterprise_id: str, team_id: str) -> InstallationRow | None:
        r = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM installations WHERE platform = $1 AND enterprise_id = $2 AND team_id = $3", platform, enterprise_id, team_id
        )
        return _row(r) if r else None

    async def all(self, platform: str) -> list[InstallationRow]:
        rows = await self._pool.fetch(f"SELECT {_COLUMNS} FROM installations WHERE platform = $1 ORDER BY installed_at", platform)
        return [_row(r) for r in rows]

    async def delete(self, platform: str, enterprise_id: str, team_id: str) -> bool:
        status = await self._pool.execute(
            "DELETE FROM installations WHERE platform = $1 AND enterprise_id = $2 AND team_id = $3", platform, enterprise_id, team_id
        )
        return status != "DELETE 0"

    async def issue_state(self, state: str, expires_at: float) -> None:
        await self._pool.execute("DELETE FROM oauth_states WHERE expires_at < $1", time.time())
        await self._pool.execute("INSERT INTO oauth_states (state, expires_at) VALUES ($1, $2)", state, expires_at)

    async def consume_state(self, state: str) -> bool:
        status = await self._pool.execute("DELETE FROM oauth_states WHERE state = $1 AND expires_at >= $2", state, time.time())
        return status != "DELETE 0"

    async def try_lock(self, name: str, holder: str, seconds: float) -> bool:
        now = time.time()
        got = await self._pool.fetchval(
            "INSERT INTO installation_locks (name, holder, until) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until "
            "WHERE installation_locks.until < $4 OR installation_locks.holder = EXCLUDED.holder RETURNING holder",
            name, holder, now + seconds, now,
        )  # fmt: skip
        return got is not None

    async def unlock(self, name: str, holder: str) -> None:
        await self._pool.execute("DELETE FROM installation_locks WHERE name = $1 AND holder = $2", name, holder)
