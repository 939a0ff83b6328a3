from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage.db import LATEST_VERSION, DatabaseTooNew, connect


async def test_new_database_is_wal_and_at_latest_version(tmp_path: Path) -> None:
    conn = await connect(tmp_path / "db.sqlite3")
    try:
        async with conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"
        async with conn.execute("PRAGMA user_version") as cur:
            assert (await cur.fetchone())[0] == LATEST_VERSION >= 1
    finally:
        await conn.close()


async def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    conn = await connect(path)
    await conn.execute(
        "INSERT INTO jobs (id, kind, platform, user_id, prompt, params_json, pipeline, status, created_at) "
        "VALUES ('abc', 'generate', 'cli', 'u', 'p', '{}', 'local', 'queued', 0)"
    )
    await conn.close()
    conn = await connect(path)
    try:
        async with conn.execute("SELECT id FROM jobs") as cur:
            assert [r[0] for r in await cur.fetchall()] == ["abc"]
    finally:
        await conn.close()


async def test_database_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version={LATEST_VERSION + 1}")
    raw.close()
    with pytest.raises(DatabaseTooNew, match="newer videobot"):
        await connect(path)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION + 1
    assert raw.execute("SELECT count(*) FROM sqlite_master WHERE name='jobs'").fetchone()[0] == 0
    raw.close()
